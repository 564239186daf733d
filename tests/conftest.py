"""The test bench: isolation of every test, loopback servers, fixture images, leak checks.

Fixtures (names are a contract other tests rely on):
- ``coop_env`` (autouse): per-test HOME / COOP_HOME / XDG_CONFIG_HOME, proxies and
  registry credentials removed from the environment;
- ``registry``: Debian's docker-registry on 127.0.0.1 (session);
- ``test_images``: small images built here and pushed to ``registry`` by skopeo (session);
- ``debian_image``: the cached debootstrapped bookworm pushed to ``registry`` (session);
- ``mirror``: loopback apt/pip/npm mirror; ``mirror.env`` for build steps (session);
- ``resigning_proxy``: the same mirror, https only, behind a TLS re-signing proxy (session);
- ``hub``: Docker-Hub-like token auth + blob CDN in front of ``registry`` (session).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from coop_build.tlstrust import TLS_VARS
from support.bench import (
    BenchUnavailable,
    CoopEnv,
    Hub,
    Mirror,
    ResigningProxy,
    push_debian,
    start_hub,
    start_mirror,
    start_registry_retrying,
    start_resigning_proxy,
)
from support.images import TestImages, build_and_push, push
from support.procs import (
    ProcInfo,
    children,
    proc_info,
    processes_with_env,
    reap_zombies,
    stop_pid,
    with_descendants,
)
from support.require import apply_needs
from support.servers import BENCH_PIDS, PROXY_VARS, Registry, Server

T = TypeVar("T")

# Anything that could point code under test at real registries, proxies or user state.
SCRUBBED_VARS = (*PROXY_VARS, "REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_CACHE_HOME",
                 "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR", "PIP_INDEX_URL",
                 "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "npm_config_registry",
                 "NPM_CONFIG_REGISTRY", "TMUX", "TMUX_PANE",
                 # TLS trust: build steps inherit these with the files they name
                 *TLS_VARS, "NPM_CONFIG_CAFILE", "npm_config_userconfig",
                 "NPM_CONFIG_USERCONFIG")


# Every process started during this session inherits this marker in its environment, so
# the leak check finds daemons that double-forked away from pytest too.
SESSION_MARKER = "COOP_TEST_SESSION"
SESSION_ID = uuid.uuid4().hex


def pytest_configure(config: pytest.Config) -> None:
    os.environ[SESSION_MARKER] = SESSION_ID


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason=f"rootonly: needs root, running as uid {os.geteuid()}")
    for item in items:
        if "rootonly" in item.keywords:
            item.add_marker(skip)


def pytest_runtest_setup(item: pytest.Item) -> None:
    apply_needs(item)  # a ``needs`` mark: skip locally, fail in CI, before any fixture


def _describe(procs: list[ProcInfo]) -> str:
    return "; ".join(f"pid {p.pid}: {p.cmdline[:120]}" for p in procs)


def _session_processes() -> dict[int, ProcInfo]:
    """Children of pytest, every process carrying this session's marker, and what runs
    below them (a sandbox's coop-init and its processes carry no marker)."""
    found = {p.pid: p for p in children()}
    found.update((p.pid, p) for p in processes_with_env(SESSION_MARKER, SESSION_ID))
    for pid in with_descendants(list(found)):
        if pid not in found and (info := proc_info(pid)) is not None:
            found[pid] = info
    return found


def _stray_processes(known: set[int]) -> list[ProcInfo]:
    return [p for pid, p in sorted(_session_processes().items())
            if p.alive and pid not in known and pid not in BENCH_PIDS]


@pytest.fixture(autouse=True)
def _no_leaked_processes() -> Iterator[None]:
    """Fails a test (at teardown) that leaves a process it started running; kills it."""
    before = set(_session_processes())
    yield
    leaked = _stray_processes(before)
    for proc in leaked:
        stop_pid(proc.pid, timeout=2.0)
    if leaked:
        pytest.fail(f"test left processes running (now killed): {_describe(leaked)}",
                    pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After every fixture is torn down, no child of pytest may still be alive."""
    leaked = _stray_processes(set())
    for proc in leaked:
        stop_pid(proc.pid, timeout=2.0)
    reap_zombies()
    if leaked:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"processes still alive at session end (now killed): {_describe(leaked)}"
        if reporter is not None:
            reporter.write_line(f"ERROR: {message}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def coop_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CoopEnv:
    """Points HOME, COOP_HOME and XDG_CONFIG_HOME into this test's tmp_path."""
    env = CoopEnv(home=tmp_path / "home", coop_home=tmp_path / "coop",
                  config_home=tmp_path / "home" / ".config")
    env.config_home.mkdir(parents=True)
    for name in SCRUBBED_VARS:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("COOP_") and not name.startswith("COOP_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(env.home))
    monkeypatch.setenv("COOP_HOME", str(env.coop_home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(env.config_home))
    return env


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry on 127.0.0.1:PORT, storage in a session tmp dir."""
    reg, server = start_registry_retrying(tmp_path_factory.mktemp("registry"))
    yield reg
    server.stop()


@pytest.fixture(scope="session")
def test_images(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> TestImages:
    """busybox, layered, layered_v2s2, multiarch and zstd, pushed to ``registry``."""
    return build_and_push(tmp_path_factory.mktemp("images"), registry.host, registry.url)


@pytest.fixture(scope="session")
def debian_image(registry: Registry) -> str:
    """``HOST/library/debian:bookworm`` from the prepared cache (see prepare-test-images)."""
    try:
        return push_debian(registry)
    except BenchUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    """The loopback apt/pip/npm mirror."""
    yield from _served(start_mirror, tmp_path_factory.mktemp("mirror"))


@pytest.fixture(scope="session")
def resigning_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResigningProxy]:
    """The mirror over https only, through a proxy that re-signs with the test's own CA."""
    yield from _served(start_resigning_proxy, tmp_path_factory.mktemp("resigning"))


def _served(start: Callable[[Path], tuple[T, Server]], workdir: Path) -> Iterator[T]:
    """A session fixture's bench server from its prepared cache, stopped afterwards; a
    cache that is missing fails the test in one line."""
    try:
        handle, server = start(workdir)
    except BenchUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield handle
    server.stop()


@pytest.fixture(scope="session")
def hub(registry: Registry, test_images: TestImages,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """Docker-Hub-like front of ``registry``; ``private/busybox:1`` needs credentials."""
    push(test_images.layout, "busybox", f"{registry.host}/private/busybox:1")
    front, server = start_hub(tmp_path_factory.mktemp("hub"), registry)
    yield front
    server.stop()
