"""The Docker-Hub-like front: challenge, tokens, private repos, the blob CDN redirect."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import requests

from support.bench import Hub
from support.images import MANIFEST_ACCEPT, TestImages
from support.procs import pid_alive

pytestmark = pytest.mark.registry

NO_PROXY = {"http": "", "https": ""}


def _token(hub: Hub, scope: str, auth: tuple[str, str] | None = None) -> requests.Response:
    return requests.get(f"{hub.url}/token", params={"service": "coop-test-hub", "scope": scope},
                        auth=auth, proxies=NO_PROXY, timeout=10)


def _manifest(hub: Hub, repo: str, token: str | None) -> requests.Response:
    headers = {"Accept": MANIFEST_ACCEPT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(f"{hub.url}/v2/{repo}/manifests/1", headers=headers, proxies=NO_PROXY,
                        timeout=10)


def test_attributes(hub: Hub) -> None:
    assert hub.host.startswith("127.0.0.1:")
    assert hub.cdn_host.startswith("localhost:")
    assert (hub.username, hub.password) == ("coop", "s3cret")
    assert hub.ref("library/busybox:1") == f"{hub.host}/library/busybox:1"
    assert pid_alive(hub.pid)


def test_v2_challenges_with_a_bearer_realm(hub: Hub) -> None:
    resp = requests.get(f"{hub.url}/v2/", proxies=NO_PROXY, timeout=10)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == (
        f'Bearer realm="http://{hub.host}/token",service="coop-test-hub"')


def test_anonymous_pull_of_library_and_blob_via_the_cdn(
        hub: Hub, test_images: TestImages) -> None:
    assert _manifest(hub, "library/busybox", None).status_code == 401
    token = _token(hub, "repository:library/busybox:pull").json()["token"]
    resp = _manifest(hub, "library/busybox", token)
    assert resp.status_code == 200
    assert resp.headers["Docker-Content-Digest"] == test_images.digests["busybox"]
    layer = resp.json()["layers"][0]["digest"]
    blob_url = f"{hub.url}/v2/library/busybox/blobs/{layer}"
    redirect = requests.get(blob_url, headers={"Authorization": f"Bearer {token}"},
                            allow_redirects=False, proxies=NO_PROXY, timeout=10)
    assert redirect.status_code == 307
    location = redirect.headers["Location"]
    assert location.startswith(f"http://{hub.cdn_host}/")
    # A client that carries the token across hosts is caught ...
    leaked = requests.get(location, headers={"Authorization": f"Bearer {token}"},
                          proxies=NO_PROXY, timeout=10)
    assert leaked.status_code == 400
    # ... one that drops it (requests does on a cross-host redirect) gets the blob.
    followed = requests.get(blob_url, headers={"Authorization": f"Bearer {token}"},
                            proxies=NO_PROXY, timeout=10)
    assert followed.status_code == 200
    assert "sha256:" + hashlib.sha256(followed.content).hexdigest() == layer
    tampered = requests.get(location.replace("sig=", "sig=0"), proxies=NO_PROXY, timeout=10)
    assert tampered.status_code == 403


def test_private_needs_credentials(hub: Hub) -> None:
    scope = "repository:private/busybox:pull"
    anonymous = _token(hub, scope).json()["token"]
    assert _manifest(hub, "private/busybox", anonymous).status_code == 401
    assert _token(hub, scope, ("coop", "wrong")).status_code == 401
    token = _token(hub, scope, (hub.username, hub.password)).json()["token"]
    assert _manifest(hub, "private/busybox", token).status_code == 200
    # A token is only good for the repositories it was issued for.
    assert _manifest(hub, "library/busybox", token).status_code == 401


def test_events_are_written_before_the_answer(hub: Hub) -> None:
    """No waiting needed: once a client has its answer, the event is on disk."""
    requests.get(f"{hub.url}/v2/", proxies=NO_PROXY, timeout=10)
    assert hub.events()[-1] == {"listener": "hub", "method": "GET", "path": "/v2/",
                                "host": hub.host, "auth": "", "status": 401}
    token = _token(hub, "repository:library/busybox:pull").json()["token"]
    assert hub.events()[-1]["path"].startswith("/token?")
    assert _manifest(hub, "library/busybox", token).status_code == 200  # streamed proxy
    assert hub.events()[-1] == {"listener": "hub", "method": "GET", "host": hub.host,
                                "path": "/v2/library/busybox/manifests/1", "auth": "bearer",
                                "status": 200}


def test_skopeo_pulls_through_tokens_and_the_cdn(
        hub: Hub, test_images: TestImages, tmp_path: Path) -> None:
    """An independent real client gets through the whole flow, credentials included."""
    env = {**os.environ, "HOME": str(tmp_path)}
    for ref, creds in ((hub.ref("library/busybox:1"), []),
                       (hub.ref("private/busybox:1"),
                        ["--src-creds", f"{hub.username}:{hub.password}"])):
        before = len(hub.events())
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", *creds,
                        f"docker://{ref}", f"oci:{tmp_path / 'oci'}:t"],
                       check=True, capture_output=True, env=env, timeout=60)
        cdn = [e for e in hub.events()[before:] if e["listener"] == "cdn"]
        assert cdn and all(e["status"] == 200 and e["auth"] == "" for e in cdn)
    denied = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                             f"docker://{hub.ref('private/busybox:1')}"],
                            capture_output=True, text=True, env=env, timeout=60, check=False)
    assert denied.returncode != 0
    assert "unauthorized" in denied.stderr.lower() or "401" in denied.stderr, denied.stderr
