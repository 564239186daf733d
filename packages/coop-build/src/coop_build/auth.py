"""Registry credentials from the files docker, podman and skopeo already use.

Looked up in ``$REGISTRY_AUTH_FILE``, then ``$DOCKER_CONFIG/config.json``, then
``~/.docker/config.json``: the first file that has an entry for the host wins. Secrets
are never logged and never appear in error messages or ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from coop_build.errors import AuthError

logger = logging.getLogger(__name__)

DOCKER_HUB_HOSTS = ("registry-1.docker.io", "docker.io", "index.docker.io")
_DOCKER_HUB_KEYS = (
    "https://index.docker.io/v1/",
    "index.docker.io",
    "docker.io",
    "registry-1.docker.io",
    "https://registry-1.docker.io",
)


@dataclass(frozen=True)
class Credentials:
    """A username and password (or identity token) for one registry."""

    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        """The value of an HTTP ``Authorization: Basic`` header."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


def auth_files(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The credential files to look in, in priority order."""
    env = os.environ if environ is None else environ
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("DOCKER_CONFIG"):
        files.append(Path(env["DOCKER_CONFIG"]) / "config.json")
    home = env.get("HOME") or str(Path.home())
    files.append(Path(home) / ".docker" / "config.json")
    return files


def _host_keys(registry: str) -> Iterator[str]:
    """Spellings of a host a config's ``auths`` may use."""
    if registry in DOCKER_HUB_HOSTS:
        yield from _DOCKER_HUB_KEYS
        return
    yield registry
    yield f"https://{registry}"
    yield f"http://{registry}"


def _normalise_key(key: str) -> str:
    """``https://host/v2/`` -> ``host``, so hand-written keys still match."""
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key.split("/", 1)[0]


def _decode(entry: object, path: Path, key: str) -> Credentials | None:
    if not isinstance(entry, dict):
        raise AuthError(f"{path}: auths[{key!r}] is not an object")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError(f"{path}: auths[{key!r}].auth is not valid base64") from None
        if not sep:
            raise AuthError(f"{path}: auths[{key!r}].auth does not hold user:password")
        return Credentials(user, password)
    name = entry.get("username")
    secret = entry.get("password") or entry.get("identitytoken")
    if isinstance(name, str) and isinstance(secret, str) and name:
        return Credentials(name, secret)
    return None


def _read_auths(path: Path) -> dict[str, object] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("cannot read %s: %s", path, exc.strerror)
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise AuthError(f"{path}: not a JSON object")
    auths = data.get("auths")
    if auths is None:
        return {}
    if not isinstance(auths, dict):
        raise AuthError(f"{path}: 'auths' is not an object")
    return auths


def credentials_for(registry: str, environ: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials configured for ``registry`` (a host[:port]), or None."""
    wanted = list(_host_keys(registry))
    for path in auth_files(environ):
        auths = _read_auths(path)
        if not auths:
            continue
        for key in wanted:
            if key in auths:
                found = _decode(auths[key], path, key)
                if found is not None:
                    logger.debug("using credentials for %s from %s", registry, path)
                    return found
        hosts = {_normalise_key(w) for w in wanted}
        for key, entry in auths.items():
            if _normalise_key(key) in hosts:
                found = _decode(entry, path, key)
                if found is not None:
                    logger.debug("using credentials for %s from %s", registry, path)
                    return found
    return None
