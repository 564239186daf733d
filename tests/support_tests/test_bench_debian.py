"""The cached Debian bookworm image, as pushed into the session registry."""

from __future__ import annotations

import tarfile

import pytest
import requests

from support.images import read_manifest
from support.prepare import SOURCES_LIST
from support.servers import Registry

pytestmark = [pytest.mark.registry, pytest.mark.debian, pytest.mark.slow]

NO_PROXY = {"http": "", "https": ""}


def test_debian_image_has_pip_npm_and_the_mirror_source(
        registry: Registry, debian_image: str) -> None:
    assert debian_image == f"{registry.host}/library/debian:bookworm"
    _kind, manifest = read_manifest(registry.url, "library/debian", "bookworm")
    (layer,) = manifest["layers"]
    wanted = {"etc/apt/sources.list", "etc/coop-test-image", "usr/lib/os-release"}
    found: dict[str, bytes] = {}
    names: set[str] = set()
    with requests.get(f"{registry.url}/v2/library/debian/blobs/{layer['digest']}",
                      stream=True, proxies=NO_PROXY, timeout=60) as resp:
        resp.raise_for_status()
        with tarfile.open(fileobj=resp.raw, mode="r|gz") as tar:
            for member in tar:
                names.add(member.name)
                if member.name in wanted and member.isfile():
                    handle = tar.extractfile(member)
                    assert handle is not None
                    found[member.name] = handle.read()
    assert found["etc/apt/sources.list"].decode() == SOURCES_LIST
    assert found["etc/coop-test-image"] == b"debian\n"
    assert b'VERSION_CODENAME=bookworm' in found["usr/lib/os-release"]
    assert {"usr/bin/pip3", "usr/bin/npm", "usr/bin/apt-get", "usr/bin/python3"} <= names
    assert not any(n.startswith("dev/") for n in names)
    assert not any(n.startswith("var/cache/apt/archives/") and n.endswith(".deb")
                   for n in names)
