"""The loopback package mirror, exercised by real clients (curl, pip, npm) on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from support.bench import BenchUnavailable, Mirror, ensure_cache
from support.procs import pid_alive
from support.require import require

pytestmark = pytest.mark.slow

NO_PROXY = {"http": "", "https": ""}
DISTS = "http://coop-test-mirror/debian/dists/bookworm"


def _curl(mirror: Mirror, *args: str) -> subprocess.CompletedProcess[str]:
    """curl through the mirror as its proxy (the only peer it talks to)."""
    return subprocess.run(["curl", "-sS", "--max-time", "10", "--proxy", mirror.url,
                           "-w", "\n%{http_code}", *args],
                          capture_output=True, text=True, check=False)


def test_env_points_build_steps_at_the_mirror(mirror: Mirror) -> None:
    base = f"http://127.0.0.1:{mirror.port}"
    assert mirror.env == {
        "http_proxy": base,
        "HTTP_PROXY": base,
        "PIP_INDEX_URL": base + "/pypi/simple/",
        "PIP_TRUSTED_HOST": "127.0.0.1",
        "npm_config_registry": base + "/npm/",
        "no_proxy": "127.0.0.1,localhost",
    }
    assert pid_alive(mirror.pid)


def test_apt_style_proxied_get_of_packages(mirror: Mirror) -> None:
    """What apt sends with http_proxy set: an absolute URI to the proxy."""
    result = _curl(mirror, f"{DISTS}/main/binary-amd64/Packages")
    body, _, status = result.stdout.rpartition("\n")
    assert status == "200", result.stderr
    packages = set(re.findall(r"^Package: (\S+)$", body, re.M))
    assert {"jq", "libjq1", "libonig5"} <= packages
    filenames = re.findall(r"^Filename: (\S+)$", body, re.M)
    assert filenames and all(f.startswith("pool/") for f in filenames)


def test_release_hashes_match_the_index_files(mirror: Mirror) -> None:
    proxies = {"http": mirror.url}
    release = requests.get(f"{DISTS}/Release", proxies=proxies, timeout=10)
    assert release.status_code == 200
    assert "Codename: bookworm" in release.text
    entries = re.findall(r"^ ([0-9a-f]{64}) (\d+) (\S+)$", release.text, re.M)
    assert {name for _h, _s, name in entries} == {"main/binary-amd64/Packages",
                                                 "main/binary-amd64/Packages.gz"}
    for digest, size, name in entries:
        data = requests.get(f"{DISTS}/{name}", proxies=proxies, timeout=10).content
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (digest, int(size))


def test_a_deb_is_served_whole(mirror: Mirror) -> None:
    proxies = {"http": mirror.url}
    index = requests.get(f"{DISTS}/main/binary-amd64/Packages", proxies=proxies, timeout=10)
    stanza = next(s for s in index.text.split("\n\n") if s.startswith("Package: jq\n"))
    filename = re.search(r"^Filename: (\S+)$", stanza, re.M)
    sha256 = re.search(r"^SHA256: (\S+)$", stanza, re.M)
    assert filename and sha256
    deb = requests.get(f"http://coop-test-mirror/debian/{filename[1]}", proxies=proxies,
                       timeout=10)
    assert deb.status_code == 200
    assert hashlib.sha256(deb.content).hexdigest() == sha256[1]


def test_the_proxy_refuses_every_other_host(mirror: Mirror) -> None:
    for url in ("http://deb.debian.org/debian/dists/bookworm/Release",
                "http://coop-test-mirror:8080/debian/dists/bookworm/Release",
                "http://127.0.0.2/"):
        result = _curl(mirror, url)
        assert result.stdout.rpartition("\n")[2] == "403", url
    # https through the proxy means CONNECT: refused as well, nothing is tunnelled.
    result = _curl(mirror, "https://blocked.invalid/")
    assert result.returncode != 0
    assert "403" in result.stderr


def test_pep503_index_and_files(mirror: Mirror) -> None:
    root = requests.get(mirror.url + "/pypi/simple/", proxies=NO_PROXY, timeout=10)
    assert root.status_code == 200 and 'href="/pypi/simple/six/"' in root.text
    project = requests.get(mirror.url + "/pypi/simple/six/", proxies=NO_PROXY, timeout=10)
    match = re.search(r'href="(/pypi/files/(six-[^"#]+\.whl))#sha256=([0-9a-f]{64})"',
                      project.text)
    assert match, project.text
    wheel = requests.get(mirror.url + match[1], proxies=NO_PROXY, timeout=10)
    assert hashlib.sha256(wheel.content).hexdigest() == match[3]
    not_normalised = requests.get(mirror.url + "/pypi/simple/Six", proxies=NO_PROXY,
                                  timeout=10, allow_redirects=False)
    assert not_normalised.status_code == 301
    assert not_normalised.headers["Location"] == "/pypi/simple/six/"
    missing = requests.get(mirror.url + "/pypi/simple/nonexistent/", proxies=NO_PROXY,
                           timeout=10)
    assert missing.status_code == 404


def test_real_pip_downloads_from_the_mirror(mirror: Mirror, tmp_path: Path) -> None:
    has_pip = subprocess.run(["/usr/bin/python3", "-m", "pip", "--version"],
                             capture_output=True, check=False).returncode == 0
    require(has_pip, "no pip for /usr/bin/python3 on this machine")
    env = {**os.environ, **mirror.env, "PIP_NO_CACHE_DIR": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_CONFIG_FILE": os.devnull}
    result = subprocess.run(["/usr/bin/python3", "-m", "pip", "download", "--no-deps",
                             "-d", str(tmp_path / "dl"), "six"],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert [p.name[:4] for p in (tmp_path / "dl").iterdir()] == ["six-"]


def test_npm_packument_points_back_with_correct_integrity(mirror: Mirror) -> None:
    doc = requests.get(mirror.url + "/npm/is-number", proxies=NO_PROXY, timeout=10).json()
    assert doc["dist-tags"]["latest"] == "7.0.0"
    dist = doc["versions"]["7.0.0"]["dist"]
    assert dist["tarball"] == f"{mirror.url}/npm/is-number/-/is-number-7.0.0.tgz"
    tarball = requests.get(dist["tarball"], proxies=NO_PROXY, timeout=10).content
    assert dist["shasum"] == hashlib.sha1(tarball).hexdigest()
    assert dist["integrity"] == "sha512-" + base64.b64encode(
        hashlib.sha512(tarball).digest()).decode()
    missing = requests.get(mirror.url + "/npm/left-pad", proxies=NO_PROXY, timeout=10)
    assert missing.status_code == 404


def test_real_npm_installs_from_the_mirror(mirror: Mirror, tmp_path: Path) -> None:
    require(shutil.which("npm") is not None, "npm is not installed on this machine")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "package.json").write_text('{"name": "t", "version": "1.0.0"}')
    (tmp_path / "user-npmrc").write_text("")
    (tmp_path / "global-npmrc").write_text("")
    env = {**os.environ, **mirror.env, "npm_config_cache": str(tmp_path / "npm-cache"),
           "npm_config_userconfig": str(tmp_path / "user-npmrc"),
           "npm_config_globalconfig": str(tmp_path / "global-npmrc"),
           "npm_config_update_notifier": "false", "npm_config_audit": "false",
           "npm_config_fund": "false"}
    result = subprocess.run(["npm", "install", "is-number@7.0.0"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    installed = json.loads((project / "node_modules" / "is-number" / "package.json").read_text())
    assert installed["version"] == "7.0.0"
    lock = json.loads((project / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/is-number"]["resolved"].startswith(mirror.url)


def test_missing_cache_fails_with_the_fix_for_users(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COOP_TEST_CACHE", str(tmp_path / "empty"))
    for part in ("mirror", "debian"):
        with pytest.raises(BenchUnavailable, match="run scripts/prepare-test-images as root"):
            ensure_cache(part, may_build=False)


def test_real_apt_updates_and_downloads_through_the_proxy(mirror: Mirror, tmp_path: Path) -> None:
    """apt-get with private state dirs, the image's sources line and the mirror as proxy."""
    from support.prepare import SOURCES_LIST

    require(shutil.which("apt-get") is not None, "apt-get is not installed on this machine")
    (tmp_path / "sources.list").write_text(SOURCES_LIST)
    for d in ("lists/partial", "cache/archives/partial", "dl"):
        (tmp_path / d).mkdir(parents=True)
    options = []
    for key, value in (("Dir::Etc::sourcelist", tmp_path / "sources.list"),
                       ("Dir::Etc::sourceparts", tmp_path / "none"),
                       ("Dir::State::Lists", tmp_path / "lists"),
                       ("Dir::Cache", tmp_path / "cache"),
                       ("Debug::NoLocking", "1"),
                       ("APT::Sandbox::User", pwd.getpwuid(os.getuid()).pw_name),
                       ("Acquire::http::Proxy", mirror.url)):
        options += ["-o", f"{key}={value}"]
    env = {**os.environ, "LC_ALL": "C"}
    update = subprocess.run(["apt-get", "update", *options], capture_output=True, text=True,
                            env=env, timeout=60, check=False)
    assert update.returncode == 0, update.stdout + update.stderr
    assert "bookworm Release" in update.stdout
    download = subprocess.run(["apt-get", "download", *options, "jq", "libjq1", "libonig5"],
                              cwd=tmp_path / "dl", capture_output=True, text=True, env=env,
                              timeout=60, check=False)
    assert download.returncode == 0, download.stdout + download.stderr
    assert sorted(p.name.split("_")[0] for p in (tmp_path / "dl").iterdir()) == [
        "jq", "libjq1", "libonig5"]
