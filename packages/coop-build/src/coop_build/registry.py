"""One OCI distribution client: auth, raw manifests, verified resumable blobs, push.

Built on oras-py's ``Registry`` object (its session, cookie policy and http/https choice),
but every request goes through ``_send`` here rather than oras-py's ``do_request``:
that one retries for minutes (3+5+11+29+83 s) on a refused port, keeps one bearer token
per object whatever the repository, sets no timeouts and cannot resume a download.
``_send`` retries briefly (``coop_build.retry``: one policy, one budget per request or
blob download), caches tokens per scope, follows redirects itself and drops
``Authorization`` when a redirect leaves the registry's host (blob CDNs).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import oras.provider
import requests

from coop_build.auth import Credentials, credentials_for
from coop_build.errors import AuthError, DigestMismatchError, NotFoundError, RegistryError
from coop_build.layout import Layout
from coop_build.manifest import ACCEPT_ALL, Descriptor, check_digest, sha256_digest
from coop_build.progress import LayerProgress, ProgressCallback, ignore_progress
from coop_build.reference import is_loopback_registry
from coop_build.retry import RetryBudget, RetryPolicy

logger = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 4 << 20
_CHUNK = 256 << 10
_REDIRECTS = (301, 302, 303, 307, 308)
_PROGRESS_INTERVAL = 0.1
MONOLITHIC_LIMIT = 64 << 20
UPLOAD_CHUNK = 16 << 20


@dataclass(frozen=True)
class RawManifest:
    """A manifest exactly as served: bytes, content type, and our own sha256 of them."""

    raw: bytes
    media_type: str
    digest: str


def insecure_registries(environ: Mapping[str, str] | None = None) -> set[str]:
    """Hosts allowed over plain http from ``COOP_INSECURE_REGISTRIES`` (comma list)."""
    env = os.environ if environ is None else environ
    return {h.strip() for h in env.get("COOP_INSECURE_REGISTRIES", "").split(",") if h.strip()}


def _short_network_error(exc: Exception) -> str:
    """One line from the nested urllib3 text (``Connection refused``, a timeout...)."""
    text = str(exc)
    for pattern in (
        r"Connection refused",
        r"Name or service not known",
        r"Temporary failure in name resolution",
        r"No route to host",
        r"Network is unreachable",
        r"Read timed out",
        r"timed out",
        r"Connection reset by peer",
        r"CERTIFICATE_VERIFY_FAILED[^'\"]*",
        r"wrong version number",
    ):
        m = re.search(pattern, text)
        if m:
            return m.group(0)
    return type(exc).__name__


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="..",service=".."`` -> ("bearer", {realm, service, ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in re.finditer(r'([A-Za-z_]+)\s*=\s*(?:"([^"]*)"|([^,\s]*))', rest)
    }
    return scheme.lower(), params


def _error_text(response: requests.Response) -> str:
    """The registry's own error message (distribution's JSON errors), shortened."""
    try:
        data = response.json()
        errors = data.get("errors") if isinstance(data, dict) else None
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            code = errors[0].get("code", "")
            message = errors[0].get("message", "")
            return f"{code}: {message}".strip(": ")[:200]
    except (ValueError, AttributeError):
        pass
    return (response.reason or "").strip()[:200]


class RegistryClient:
    """A client for one registry host.

    ``insecure=None`` picks plain http for loopback registries and for hosts listed in
    ``COOP_INSECURE_REGISTRIES``; https with verification otherwise. Safe to share
    between threads (a pull fetches blobs in parallel through one client). ``retry``
    bounds every request and every blob download (see ``RetryPolicy`` for the worst case).
    """

    def __init__(
        self,
        registry: str,
        *,
        insecure: bool | None = None,
        environ: Mapping[str, str] | None = None,
        credentials: Credentials | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.registry = registry
        loopback = is_loopback_registry(registry)
        if insecure is None:
            insecure = loopback or registry in insecure_registries(env)
        self.insecure = insecure
        self._oras = oras.provider.Registry(hostname=registry, insecure=insecure)
        self._session: requests.Session = self._oras.session
        if loopback:
            # Never route loopback traffic through a proxy from the environment.
            self._session.trust_env = False
        self._base = f"{self._oras.prefix}://{registry}"
        self._credentials = (
            credentials if credentials is not None else credentials_for(registry, env)
        )
        self._timeout = (connect_timeout, read_timeout)
        self._retry = retry if retry is not None else RetryPolicy()
        self._tokens: dict[str, str] = {}
        self._basic = False  # the registry answered with a Basic challenge
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RegistryClient({self.registry!r}, insecure={self.insecure})"

    # -- manifests --------------------------------------------------------------------

    def get_manifest(
        self, repository: str, reference: str, accept: str = ACCEPT_ALL
    ) -> RawManifest:
        """The raw manifest for a tag or digest; NotFoundError if absent."""
        path = f"/v2/{repository}/manifests/{reference}"
        response = self._send(
            "GET",
            repository,
            path,
            headers={"Accept": accept},
            what=self._what(repository, reference),
        )
        with response:
            raw = self._read_limited(response, MAX_MANIFEST_BYTES)
        digest = sha256_digest(raw)
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatchError(
                f"manifest {self._what(repository, reference)} hashes to {digest}"
            )
        served = response.headers.get("Docker-Content-Digest", "")
        if served.startswith("sha256:") and served != digest:
            raise DigestMismatchError(
                f"manifest {self._what(repository, reference)}: registry says {served}, "
                f"content hashes to {digest}"
            )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            declared = json.loads(raw).get("mediaType")
        except (ValueError, AttributeError):
            declared = None
        if isinstance(declared, str) and declared:
            media_type = declared
        return RawManifest(raw=raw, media_type=media_type, digest=digest)

    def manifest_exists(self, repository: str, reference: str, accept: str = ACCEPT_ALL) -> bool:
        path = f"/v2/{repository}/manifests/{reference}"
        try:
            self._send("HEAD", repository, path, headers={"Accept": accept}).close()
        except NotFoundError:
            return False
        return True

    def push_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> str:
        """Upload a manifest under a tag (or its digest); returns its digest."""
        digest = sha256_digest(raw)
        self._send(
            "PUT",
            repository,
            f"/v2/{repository}/manifests/{reference}",
            headers={"Content-Type": media_type},
            body=lambda: raw,
            actions="pull,push",
            ok=(200, 201, 202),
            what=self._what(repository, reference),
        ).close()
        return digest

    # -- blobs ------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        try:
            self._send("HEAD", repository, f"/v2/{repository}/blobs/{check_digest(digest)}").close()
        except NotFoundError:
            return False
        return True

    def fetch_blob(
        self,
        repository: str,
        descriptor: Descriptor,
        layout: Layout,
        progress: ProgressCallback = ignore_progress,
    ) -> Path:
        """Download a blob into ``layout``, verified; resumes a partial file left before.

        Concurrent fetches of one digest (threads or processes) serialise on an ``fcntl``
        lock of the partial file; the loser finds the blob already in place.
        """
        digest = check_digest(descriptor.digest)
        final = layout.blob_path(digest)
        if final.is_file():
            progress(LayerProgress(digest, descriptor.size, descriptor.size, 0.0, cached=True))
            return final
        partial = layout.partial_path(digest)
        with partial.open("ab") as out:
            fcntl.flock(out, fcntl.LOCK_EX)
            if final.is_file():
                partial.unlink(missing_ok=True)
                progress(LayerProgress(digest, descriptor.size, descriptor.size, 0.0, cached=True))
                return final
            try:
                self._download(repository, descriptor, partial, out, progress)
            except DigestMismatchError:
                partial.unlink(missing_ok=True)
                raise
            return layout.commit_partial(digest, verify=False)  # hashed while downloading

    def _download(
        self,
        repository: str,
        desc: Descriptor,
        partial: Path,
        out: IO[bytes],
        progress: ProgressCallback,
    ) -> None:
        size = desc.size
        hasher = hashlib.sha256()
        done = partial.stat().st_size
        if done > size:
            out.truncate(0)
            done = 0
        with partial.open("rb") as existing:
            while chunk := existing.read(1 << 20):
                hasher.update(chunk)
        if done:
            logger.info("resuming %s at byte %d of %d", desc.digest, done, size)
        started = time.monotonic()
        start_done = done
        last = 0.0
        budget = self._retry.budget()
        while done < size:
            headers = {"Range": f"bytes={done}-"} if done else {}
            try:
                response = self._send(
                    "GET",
                    repository,
                    f"/v2/{repository}/blobs/{desc.digest}",
                    headers=headers,
                    stream=True,
                    ok=(200, 206),
                    what=f"blob {desc.digest} of {self.registry}/{repository}",
                    budget=budget,
                )
                with response:
                    if done and response.status_code == 200:
                        # The server ignored Range: start over.
                        out.truncate(0)
                        out.seek(0)
                        hasher = hashlib.sha256()
                        done = start_done = 0
                    elif response.status_code == 206 and not response.headers.get(
                        "Content-Range", ""
                    ).startswith(f"bytes {done}-"):
                        raise RegistryError(
                            f"blob {desc.digest}: registry answered range {done}- with "
                            f"{response.headers.get('Content-Range')!r}"
                        )
                    for chunk in response.iter_content(_CHUNK):
                        if done + len(chunk) > size:
                            out.truncate(0)
                            raise DigestMismatchError(
                                f"blob {desc.digest} is larger than the {size} bytes announced"
                            )
                        out.write(chunk)
                        hasher.update(chunk)
                        done += len(chunk)
                        now = time.monotonic()
                        if now - last >= _PROGRESS_INTERVAL:
                            last = now
                            rate = (done - start_done) / max(now - started, 1e-6)
                            progress(LayerProgress(desc.digest, done, size, rate))
                    out.flush()
            except requests.RequestException as exc:
                out.flush()
                pause = budget.spend()
                if pause is None:
                    raise RegistryError(
                        f"downloading {desc.digest} from {self.registry} failed at byte "
                        f"{done} of {size}: {_short_network_error(exc)} (partial kept)"
                    ) from None
                logger.info("download of %s interrupted (%s); resuming", desc.digest, exc)
                time.sleep(pause)
                continue
            if done < size:
                pause = budget.spend()
                if pause is None:
                    raise RegistryError(
                        f"blob {desc.digest} from {self.registry} ended at byte {done} of "
                        f"{size} (partial kept)"
                    )
                logger.info("blob %s ended at byte %d of %d; resuming", desc.digest, done, size)
                time.sleep(pause)
        actual = "sha256:" + hasher.hexdigest()
        if actual != desc.digest:
            out.truncate(0)
            partial.unlink(missing_ok=True)
            raise DigestMismatchError(
                f"blob {desc.digest} from {self.registry}/{repository} hashes to {actual}; "
                "discarded"
            )
        now = time.monotonic()
        progress(
            LayerProgress(desc.digest, done, size, (done - start_done) / max(now - started, 1e-6))
        )

    def push_blob(self, repository: str, digest: str, path: Path) -> None:
        """Upload a file as blob ``digest`` unless the registry has it already."""
        check_digest(digest)
        if self.blob_exists(repository, digest):
            logger.debug("blob %s already in %s/%s", digest, self.registry, repository)
            return
        size = path.stat().st_size
        response = self._send(
            "POST",
            repository,
            f"/v2/{repository}/blobs/uploads/",
            actions="pull,push",
            ok=(202,),
            what=f"upload to {self.registry}/{repository}",
        )
        response.close()
        location = self._location(response)
        if size > MONOLITHIC_LIMIT:
            location = self._upload_chunks(repository, location, path, size)
        put_url = self._with_query(location, digest=digest)
        if size > MONOLITHIC_LIMIT:
            self._send(
                "PUT",
                repository,
                put_url,
                headers={"Content-Length": "0"},
                body=lambda: b"",
                actions="pull,push",
                ok=(201, 204),
            ).close()
            return
        with path.open("rb") as f:

            def rewind() -> IO[bytes]:
                f.seek(0)
                return f

            self._send(
                "PUT",
                repository,
                put_url,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                body=rewind,
                actions="pull,push",
                ok=(201, 204),
                what=f"blob {digest} to {self.registry}/{repository}",
            ).close()

    def _upload_chunks(self, repository: str, location: str, path: Path, size: int) -> str:
        with path.open("rb") as f:
            offset = 0
            while offset < size:
                data = f.read(UPLOAD_CHUNK)
                end = offset + len(data) - 1
                response = self._send(
                    "PATCH",
                    repository,
                    location,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{end}",
                        "Content-Length": str(len(data)),
                    },
                    body=lambda data=data: data,  # type: ignore[misc]
                    actions="pull,push",
                    ok=(202,),
                )
                response.close()
                location = self._location(response)
                offset = end + 1
        return location

    # -- HTTP -------------------------------------------------------------------------

    def _what(self, repository: str, reference: str) -> str:
        sep = "@" if reference.startswith("sha256:") else ":"
        return f"{self.registry}/{repository}{sep}{reference}"

    def _location(self, response: requests.Response) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self.registry} gave no upload location")
        return urllib.parse.urljoin(response.url, location)

    @staticmethod
    def _with_query(url: str, **params: str) -> str:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        query.extend(params.items())
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    @staticmethod
    def _read_limited(response: requests.Response, limit: int) -> bytes:
        data = bytearray()
        for chunk in response.iter_content(65536):
            data += chunk
            if len(data) > limit:
                raise RegistryError(f"manifest larger than {limit} bytes; refusing it")
        return bytes(data)

    def _auth_header(self, scope: str) -> dict[str, str]:
        with self._lock:
            token = self._tokens.get(scope)
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self._basic and self._credentials is not None:
            return {"Authorization": self._credentials.basic_header()}
        return {}

    def _send(
        self,
        method: str,
        repository: str,
        path_or_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Callable[[], Any] | None = None,
        stream: bool = False,
        actions: str = "pull",
        ok: tuple[int, ...] = (200,),
        what: str | None = None,
        budget: RetryBudget | None = None,
    ) -> requests.Response:
        """One request with auth, bounded retries and hand-followed redirects.

        Returns the response when its status is in ``ok``; raises our errors otherwise.
        Its tries (redirects and the token request included) count against ``budget``, a
        fresh one of the client's policy unless the caller's operation shares its own.
        """
        if budget is None:
            budget = self._retry.budget()
        url = path_or_url if "://" in path_or_url else self._base + path_or_url
        scope = f"repository:{repository}:{actions}"
        what = what or f"{self.registry}/{repository}"
        authenticated = False
        while True:
            response = self._round_trip(
                method, url, headers=headers or {}, body=body, stream=stream, scope=scope,
                budget=budget,
            )
            if response.status_code in (401, 403) and not authenticated:
                authenticated = True
                challenge = response.headers.get("WWW-Authenticate", "")
                response.close()
                if challenge and self._answer_challenge(challenge, scope, budget):
                    continue
                if response.status_code == 401:
                    raise self._auth_error(what)
            break
        if response.status_code in ok:
            return response
        status = response.status_code
        detail = _error_text(response) if method != "HEAD" else response.reason
        response.close()
        if status in (401, 403):
            raise self._auth_error(what, status)
        if status == 404:
            raise NotFoundError(f"{what} not found ({detail})")
        raise RegistryError(f"{method} {what}: HTTP {status} {detail}")

    def _auth_error(self, what: str, status: int | None = None) -> AuthError:
        if self._credentials is None:
            return AuthError(
                f"{self.registry} refused access to {what} and no credentials are configured "
                "for it (docker login / $REGISTRY_AUTH_FILE)"
            )
        denied = f" (HTTP {status})" if status else ""
        return AuthError(
            f"{self.registry} refused access to {what} for user "
            f"{self._credentials.username!r}{denied}"
        )

    def _round_trip(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: Callable[[], Any] | None,
        stream: bool,
        scope: str,
        budget: RetryBudget,
    ) -> requests.Response:
        """Send, retrying network errors and 5xx briefly; follow redirects by hand."""
        origin = urllib.parse.urlsplit(self._base).netloc
        for hop in range(6):
            request_headers = dict(headers)
            host = urllib.parse.urlsplit(url).netloc
            if host == origin:
                request_headers.update(self._auth_header(scope))
            # else: a CDN or other host: never send the registry's credentials there.
            response = self._retrying(
                method, url, headers=request_headers, body=body, stream=stream, budget=budget
            )
            if response.status_code not in _REDIRECTS:
                return response
            location = response.headers.get("Location")
            response.close()
            if not location:
                raise RegistryError(f"{self.registry} redirected without a Location")
            url = urllib.parse.urljoin(url, location)
            if method == "HEAD" or response.status_code in (307, 308):
                continue
            if method not in ("GET", "HEAD"):
                raise RegistryError(f"{self.registry} redirected a {method} request; not followed")
            logger.debug("redirect %d to %s", hop, urllib.parse.urlsplit(url).netloc)
        raise RegistryError(f"{self.registry}: too many redirects")

    def _retrying(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: Callable[[], Any] | None = None,
        stream: bool = False,
        params: Mapping[str, str] | None = None,
        budget: RetryBudget,
        unreachable: str | None = None,
    ) -> requests.Response:
        """One request, tried again while ``budget`` allows after a network error (not a
        TLS one) or a try-again status; the last such answer is returned as it is.

        A network error that ends the tries raises ``RegistryError(unreachable + reason)``
        (default: "cannot reach registry HOST (SCHEME): ").
        """
        host = urllib.parse.urlsplit(url).netloc
        while True:
            try:
                response = self._session.request(
                    method,
                    url,
                    params=params,
                    headers=dict(headers),
                    data=body() if body is not None else None,
                    stream=stream,
                    timeout=self._timeout,
                    allow_redirects=False,
                    verify=True,
                )
            except requests.RequestException as exc:
                reason = _short_network_error(exc)
                tls = isinstance(exc, requests.exceptions.SSLError)
                pause = None if tls else budget.spend()
                if pause is None:
                    if unreachable is None:
                        unreachable = f"cannot reach registry {host} ({self._oras.prefix}): "
                    raise RegistryError(unreachable + reason) from None
                logger.info("%s %s: %s; retrying", method, host, reason)
                time.sleep(pause)
                continue
            if response.status_code in self._retry.statuses:
                pause = budget.spend()
                if pause is not None:
                    response.close()
                    logger.info("%s %s: HTTP %d; retrying", method, host, response.status_code)
                    time.sleep(pause)
                    continue
            return response

    def _answer_challenge(self, challenge: str, scope: str, budget: RetryBudget) -> bool:
        """Get what a 401 asked for; True if the request is worth repeating."""
        scheme, params = _parse_challenge(challenge)
        if scheme == "basic":
            if self._credentials is None:
                return False
            self._basic = True
            return True
        if scheme != "bearer" or not params.get("realm"):
            return False
        token = self._fetch_token(params, scope, budget)
        if token is None:
            return False
        with self._lock:
            self._tokens[scope] = token
        return True

    def _fetch_token(
        self, params: Mapping[str, str], scope: str, budget: RetryBudget
    ) -> str | None:
        realm = params["realm"]
        query: dict[str, str] = {}
        if params.get("service"):
            query["service"] = params["service"]
        query["scope"] = params.get("scope") or scope
        headers = {"Accept": "application/json"}
        if self._credentials is not None:
            headers["Authorization"] = self._credentials.basic_header()
            query["account"] = self._credentials.username
        host = urllib.parse.urlsplit(realm).netloc
        try:
            with contextlib.closing(
                self._retrying(
                    "GET",
                    realm,
                    params=query,
                    headers=headers,
                    budget=budget,
                    unreachable=f"cannot reach token service {host} of {self.registry}: ",
                )
            ) as response:
                if response.status_code != 200:
                    logger.debug("token endpoint answered HTTP %d", response.status_code)
                    if response.status_code in (401, 403):
                        return None
                    raise RegistryError(
                        f"token service of {self.registry} answered HTTP "
                        f"{response.status_code} {_error_text(response)}"
                    )
                data = response.json()
        except requests.RequestException as exc:  # reading the body
            raise RegistryError(
                f"cannot reach token service {host} of {self.registry}: {_short_network_error(exc)}"
            ) from None
        except ValueError:
            raise RegistryError(f"token service of {self.registry} sent invalid JSON") from None
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        return token if isinstance(token, str) and token else None
