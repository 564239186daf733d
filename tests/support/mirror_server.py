"""The loopback package mirror the build tests install from (run as a script by the bench).

One HTTP server on 127.0.0.1 that
- acts as an HTTP proxy for absolute-URI requests to ``coop-test-mirror`` only, serving the
  Debian mini-repository (every other proxied host gets 403: nothing leaves the machine);
- serves a PEP 503 simple index under ``/pypi/simple/`` and the files under ``/pypi/files/``;
- serves an npm registry subset under ``/npm/`` (packuments whose tarball URLs point back here).

With ``--tls-cert``/``--tls-key`` it is a re-signing proxy instead, as on company networks:
``CONNECT coop-test-mirror:443`` is answered by the proxy itself with that certificate (made
by the test's own CA), and the same files are served inside the tunnel; plain
``http://coop-test-mirror`` requests are redirected to ``https://`` (so apt's http source
goes through TLS too). Only clients that trust the test's CA get anything.

Standard library only, so it starts fast and needs nothing from the venv.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import html
import io
import json
import re
import ssl
import tarfile
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MIRROR_HOST = "coop-test-mirror"
TLS_BASE = f"https://{MIRROR_HOST}"


def normalize(name: str) -> str:
    """PEP 503 project-name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


class Catalog:
    """What the mirror serves, computed once from the cache directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.wheels: dict[str, list[tuple[str, str]]] = {}
        for path in sorted((self.root / "pypi").glob("*")):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            project = normalize(path.name.split("-", 1)[0])
            self.wheels.setdefault(project, []).append((path.name, digest))
        self.packuments: dict[str, dict[str, Any]] = {}
        for path in sorted((self.root / "npm").glob("*.tgz")):
            self._add_npm(path)

    def _add_npm(self, path: Path) -> None:
        data = path.read_bytes()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            member = tar.extractfile("package/package.json")
            if member is None:
                raise ValueError(f"{path.name}: no package/package.json")
            meta: dict[str, Any] = json.load(member)
        name, version = str(meta["name"]), str(meta["version"])
        meta["_id"] = f"{name}@{version}"
        meta["dist"] = {
            "tarball": f"/npm/{name}/-/{path.name}",  # the base is the request's
            "shasum": hashlib.sha1(data).hexdigest(),
            "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
        }
        doc = self.packuments.setdefault(
            name, {"_id": name, "name": name, "dist-tags": {}, "versions": {}})
        doc["versions"][version] = meta
        doc["dist-tags"]["latest"] = version

    def file(self, *parts: str) -> Path | None:
        """A file under the root, or None (also for anything escaping it)."""
        if any(p in ("", ".", "..") or "/" in p for p in parts):
            return None
        path = self.root.joinpath(*parts)
        return path if path.is_file() else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "coop-test-mirror"
    catalog: Catalog
    base_url: str  # where npm tarballs are fetched from
    tls: ssl.SSLContext | None = None  # set: a re-signing proxy for coop-test-mirror:443

    def do_GET(self) -> None:
        self._dispatch(body=True)

    def do_HEAD(self) -> None:
        self._dispatch(body=False)

    def do_CONNECT(self) -> None:
        if self.tls is None or self.path != f"{MIRROR_HOST}:443":
            self._send(403, b"only coop-test-mirror:443 is tunnelled\n", "text/plain", True)
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        try:
            conn = self.tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError) as exc:  # the client did not trust us: its error
            self.log_message("TLS handshake failed: %s", exc)
            return
        try:
            TunnelHandler(conn, self.client_address, self.server)
        finally:
            conn.close()

    def _dispatch(self, body: bool) -> None:
        target = self.path
        if "://" in target:
            url = urllib.parse.urlsplit(target)
            if url.scheme != "http" or url.hostname != MIRROR_HOST or url.port not in (None, 80):
                self._send(403, b"only http://coop-test-mirror is proxied\n", "text/plain", body)
                return
            if self.tls is not None:
                self._redirect(TLS_BASE + url.path, body)
                return
            self._debian(urllib.parse.unquote(url.path), body)
            return
        path = urllib.parse.unquote(urllib.parse.urlsplit(target).path)
        if path.startswith("/debian/"):
            self._debian(path, body)
        elif path.startswith("/pypi/"):
            self._pypi(path, body)
        elif path.startswith("/npm/"):
            self._npm(path, body)
        else:
            self._send(404, b"not found\n", "text/plain", body)

    def _debian(self, path: str, body: bool) -> None:
        parts = path.strip("/").split("/")
        found = self.catalog.file(*parts) if parts[:1] == ["debian"] else None
        if found is None:
            self._send(404, b"not found\n", "text/plain", body)
            return
        kind = "application/vnd.debian.binary-package" if found.suffix == ".deb" else (
            "application/gzip" if found.suffix == ".gz" else "text/plain")
        self._send(200, found.read_bytes(), kind, body)

    def _pypi(self, path: str, body: bool) -> None:
        parts = path.strip("/").split("/")
        if parts == ["pypi", "simple"] and path.endswith("/"):
            links = "".join(f'<a href="/pypi/simple/{p}/">{p}</a>\n'
                            for p in sorted(self.catalog.wheels))
            self._html("simple index", links, body)
        elif len(parts) == 3 and parts[1] == "simple":
            project = normalize(parts[2])
            files = self.catalog.wheels.get(project)
            if files is None:
                self._send(404, b"no such project\n", "text/plain", body)
            elif not path.endswith("/") or project != parts[2]:
                self._redirect(f"/pypi/simple/{project}/", body)
            else:
                links = "".join(
                    f'<a href="/pypi/files/{html.escape(n)}#sha256={d}">{html.escape(n)}</a>\n'
                    for n, d in files)
                self._html(f"links for {project}", links, body)
        elif len(parts) == 3 and parts[1] == "files":
            found = self.catalog.file("pypi", parts[2])
            if found is None:
                self._send(404, b"not found\n", "text/plain", body)
            else:
                self._send(200, found.read_bytes(), "application/octet-stream", body)
        else:
            self._send(404, b"not found\n", "text/plain", body)

    def _npm(self, path: str, body: bool) -> None:
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[1] in self.catalog.packuments:
            doc = copy.deepcopy(self.catalog.packuments[parts[1]])
            for meta in doc["versions"].values():
                meta["dist"]["tarball"] = self.base_url + meta["dist"]["tarball"]
            data = json.dumps(doc).encode()
            self._send(200, data, "application/json", body)
        elif len(parts) == 4 and parts[2] == "-" and parts[1] in self.catalog.packuments:
            found = self.catalog.file("npm", parts[3])
            if found is None:
                self._send(404, b'{"error":"not found"}', "application/json", body)
            else:
                self._send(200, found.read_bytes(), "application/octet-stream", body)
        else:
            self._send(404, b'{"error":"not found"}', "application/json", body)

    def _html(self, title: str, links: str, body: bool) -> None:
        page = (f"<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" "
                f"content=\"1.0\"><title>{title}</title></head><body>\n{links}</body></html>\n")
        self._send(200, page.encode(), "text/html", body)

    def _redirect(self, location: str, body: bool) -> None:
        self.send_response(301)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, status: int, data: bytes, kind: str, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


class TunnelHandler(Handler):
    """Requests inside a CONNECT tunnel, after our TLS handshake: origin-form paths."""

    base_url = TLS_BASE
    tls = None


def main() -> None:
    parser = argparse.ArgumentParser(description="coop loopback package mirror")
    parser.add_argument("--root", type=Path, required=True, help="the cache's mirror/ dir")
    parser.add_argument("--ports-file", type=Path, required=True)
    parser.add_argument("--tls-cert", type=Path, help="re-sign coop-test-mirror:443 with this")
    parser.add_argument("--tls-key", type=Path)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    Handler.catalog = Catalog(args.root)
    Handler.base_url = f"http://127.0.0.1:{port}"
    if args.tls_cert is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        Handler.tls = context
    tmp = args.ports_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"port": port}))
    tmp.replace(args.ports_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
