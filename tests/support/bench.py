"""The objects the bench fixtures hand to tests, and how they are started."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import prepare
from .images import push
from .servers import Registry, Server, python_server, start_registry
from .tlsca import ProxyCA, make_test_ca

DEBIAN_REF = "library/debian:bookworm"
HUB_USER = "coop"
HUB_PASSWORD = "s3cret"


class BenchUnavailable(Exception):
    """A cached input is missing and this process may not build it (not root)."""


@dataclass(frozen=True)
class CoopEnv:
    """The isolated per-test directories behind HOME, COOP_HOME and XDG_CONFIG_HOME.

    ``home`` and ``config_home`` exist; ``coop_home`` does not, so code under test has to
    create it.
    """

    home: Path
    coop_home: Path
    config_home: Path


@dataclass(frozen=True)
class Mirror:
    """The loopback package mirror (Debian via proxy, PyPI simple index, npm subset)."""

    port: int
    pid: int
    root: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def env(self) -> dict[str, str]:
        """Environment that points apt, pip and npm in a build step at this mirror."""
        return {
            "http_proxy": self.url,
            "HTTP_PROXY": self.url,
            "PIP_INDEX_URL": f"{self.url}/pypi/simple/",
            "PIP_TRUSTED_HOST": "127.0.0.1",
            "npm_config_registry": f"{self.url}/npm/",
            "no_proxy": "127.0.0.1,localhost",
        }


@dataclass(frozen=True)
class ResigningProxy:
    """The mirror behind a proxy that re-signs TLS with its own CA (a company network's).

    Build steps reach it only over https through the proxy; ``ca.ca_cert`` is the one
    certificate that makes that work.
    """

    port: int
    pid: int
    ca: ProxyCA

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Proxies and https mirror URLs for apt, pip and npm; no trust of any kind."""
        mirror = f"https://{prepare.MIRROR_HOST}"
        return {
            "http_proxy": self.url,
            "https_proxy": self.url,
            "HTTP_PROXY": self.url,
            "HTTPS_PROXY": self.url,
            "PIP_INDEX_URL": f"{mirror}/pypi/simple/",
            "npm_config_registry": f"{mirror}/npm/",
            "no_proxy": "127.0.0.1,localhost",
        }


@dataclass(frozen=True)
class Hub:
    """The Docker-Hub-like front: bearer tokens, basic-auth for private/*, blob CDN."""

    host: str
    cdn_host: str
    pid: int
    events_file: Path
    username: str = HUB_USER
    password: str = HUB_PASSWORD

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def ref(self, repo_and_tag: str) -> str:
        """``library/busybox:1`` -> ``127.0.0.1:P/library/busybox:1``."""
        return f"{self.host}/{repo_and_tag}"

    def events(self) -> list[dict[str, Any]]:
        """Every request the hub and its CDN answered so far, oldest first."""
        if not self.events_file.exists():
            return []
        lines = self.events_file.read_text().splitlines()
        return [json.loads(line) for line in lines if line]


def start_registry_retrying(workdir: Path, attempts: int = 3) -> tuple[Registry, Server]:
    """docker-registry cannot bind port 0, so a picked port can be taken meanwhile."""
    from .procs import free_port

    for attempt in range(attempts):
        try:
            return start_registry(workdir / f"try{attempt}", free_port())
        except RuntimeError as exc:
            if "address already in use" not in str(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def ensure_cache(part: str, *, may_build: bool | None = None) -> Path:
    """The cached ``debian`` layout or ``mirror`` dir; built here only when we are root."""
    if may_build is None:
        may_build = os.geteuid() == 0
    cache = prepare.cache_dir()
    ready, name = {
        "debian": (prepare.debian_ready, prepare.DEBIAN_DIR),
        "mirror": (prepare.mirror_ready, prepare.MIRROR_DIR),
    }[part]
    if ready(cache):
        return cache / name
    if not may_build:
        raise BenchUnavailable(f"test cache {cache / name} is missing or stale: "
                               "run scripts/prepare-test-images as root")
    return prepare.ensure_built(cache, part)


def push_debian(registry: Registry) -> str:
    layout = ensure_cache("debian")
    ref = f"{registry.host}/{DEBIAN_REF}"
    push(layout, prepare.DEBIAN_TAG, ref)
    return ref


def start_mirror(workdir: Path) -> tuple[Mirror, Server]:
    root = ensure_cache("mirror")
    server, ports = python_server("mirror", "mirror_server.py", ["--root", str(root)], workdir)
    return Mirror(port=ports["port"], pid=server.pid, root=root), server


def start_resigning_proxy(workdir: Path) -> tuple[ResigningProxy, Server]:
    root = ensure_cache("mirror")
    ca = make_test_ca(workdir / "ca", prepare.MIRROR_HOST)
    server, ports = python_server(
        "resigning-proxy", "mirror_server.py",
        ["--root", str(root), "--tls-cert", str(ca.server_cert), "--tls-key", str(ca.server_key)],
        workdir)
    return ResigningProxy(port=ports["port"], pid=server.pid, ca=ca), server


def start_hub(workdir: Path, registry: Registry) -> tuple[Hub, Server]:
    events = workdir / "events.jsonl"
    server, ports = python_server(
        "hub", "hub_server.py",
        ["--registry", registry.url, "--events", str(events), "--username", HUB_USER,
         "--password", HUB_PASSWORD], workdir)
    hub = Hub(host=f"127.0.0.1:{ports['port']}", cdn_host=f"localhost:{ports['cdn_port']}",
              pid=server.pid, events_file=events)
    return hub, server
