"""Credential lookup in docker/podman config files."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from coop_build.auth import Credentials, credentials_for
from coop_build.errors import AuthError


def _write(path: Path, auths: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths}))
    return path


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_docker_config_in_home(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    _write(tmp_path / ".docker/config.json", {"127.0.0.1:5000": {"auth": _b64("ann:s3:cret")}})
    assert credentials_for("127.0.0.1:5000", env) == Credentials("ann", "s3:cret")
    assert credentials_for("127.0.0.1:5001", env) is None


def test_priority_registry_auth_file_then_docker_config_then_home(tmp_path: Path) -> None:
    home = _write(tmp_path / "home/.docker/config.json", {"r.example": {"auth": _b64("home:1")}})
    dc = _write(tmp_path / "dc/config.json", {"r.example": {"auth": _b64("dockerconfig:2")}})
    raf = _write(tmp_path / "auth.json", {"r.example": {"username": "raf", "password": "3"}})
    env = {
        "HOME": str(tmp_path / "home"),
        "DOCKER_CONFIG": str(dc.parent),
        "REGISTRY_AUTH_FILE": str(raf),
    }
    assert credentials_for("r.example", env) == Credentials("raf", "3")
    del env["REGISTRY_AUTH_FILE"]
    assert credentials_for("r.example", env) == Credentials("dockerconfig", "2")
    del env["DOCKER_CONFIG"]
    assert credentials_for("r.example", env) == Credentials("home", "1")
    assert home.exists()


def test_first_file_without_the_host_falls_through(tmp_path: Path) -> None:
    raf = _write(tmp_path / "auth.json", {"other.example": {"auth": _b64("x:y")}})
    _write(tmp_path / ".docker/config.json", {"https://r.example/v2/": {"auth": _b64("u:p")}})
    env = {"HOME": str(tmp_path), "REGISTRY_AUTH_FILE": str(raf)}
    assert credentials_for("r.example", env) == Credentials("u", "p")


@pytest.mark.parametrize("host", ["registry-1.docker.io", "docker.io", "index.docker.io"])
def test_docker_hub_aliases(tmp_path: Path, host: str) -> None:
    _write(tmp_path / ".docker/config.json", {"https://index.docker.io/v1/": {"auth": _b64("h:p")}})
    assert credentials_for(host, {"HOME": str(tmp_path)}) == Credentials("h", "p")


def test_secret_never_in_repr_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path / ".docker/config.json", {"h:1": {"auth": _b64("user:topsecret")}})
    with caplog.at_level(logging.DEBUG):
        creds = credentials_for("h:1", {"HOME": str(tmp_path)})
    assert creds is not None
    assert "topsecret" not in repr(creds)
    assert "topsecret" not in caplog.text
    assert creds.basic_header() == "Basic " + _b64("user:topsecret")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"auths": []}', "'auths' is not an object"),
        ('{"auths": {"h:1": {"auth": "!!!"}}}', "not valid base64"),
        ('{"auths": {"h:1": {"auth": "' + _b64("nocolon") + '"}}}', "user:password"),
    ],
)
def test_broken_files_are_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / ".docker/config.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(AuthError, match=message) as err:
        credentials_for("h:1", {"HOME": str(tmp_path)})
    assert str(path) in str(err.value)


def test_no_files_means_no_credentials(tmp_path: Path) -> None:
    assert credentials_for("h:1", {"HOME": str(tmp_path)}) is None
