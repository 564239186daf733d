"""The session starter (``coop_run.session.zygote``): its wire format, and for real the process
that forks supervisors, its spare, and how both end while sessions carry on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sup_helpers import stop_supervisor, supervisor_config
from supervisor_client import info

from coop_run.daemon.zygote_client import ZygoteClient
from coop_run.errors import SupervisorError
from coop_run.sandbox.network.none import NoNetwork
from coop_run.session.config import SupervisorConfig
from coop_run.session.launch import SupervisorHandle, decode_launch, encode_launch
from support.bench import CoopEnv
from support.procs import children, pid_alive, proc_info, stop_pid, wait_for, with_descendants
from support.require import needs
from support.rootfs import busybox_available

TIMEOUT = 15.0


@pytest.fixture
def config(coop_env: CoopEnv, busybox_layer: Path, workspace: Path) -> SupervisorConfig:
    return supervisor_config(coop_env, busybox_layer, workspace, "zyg", ("sh",),
                             agent_env={"X": "1"}, cols=100, rows=30)


# --- the wire format (pure) -------------------------------------------------------------


def test_a_launch_survives_the_wire(config: SupervisorConfig, coop_env: CoopEnv) -> None:
    config.sandbox.created = 1234
    data = encode_launch(config, network="veth", coop_home=coop_env.coop_home)
    decoded, network, home = decode_launch(data)
    assert (network, home) == ("veth", coop_env.coop_home)
    assert encode_launch(decoded, network=network, coop_home=home) == data
    assert list(decoded.agent) == ["sh"] and decoded.agent_env == {"X": "1"}
    assert (decoded.cols, decoded.rows, decoded.stop_grace) == (100, 30, 1.0)
    assert decoded.sandbox.session_dir == config.sandbox.session_dir
    assert decoded.sandbox.layers == tuple(Path(p) for p in config.sandbox.layers)
    assert (decoded.sandbox.created, decoded.sandbox.env) == (1234, {"PS1": "$ "})
    assert decoded.log_file == config.log_file


def test_a_launch_carries_no_network_object(config: SupervisorConfig,
                                            coop_env: CoopEnv) -> None:
    config.sandbox.network = NoNetwork()
    with pytest.raises(ValueError, match="network"):
        encode_launch(config, network="none", coop_home=coop_env.coop_home)


@pytest.mark.parametrize(("change", "field"), [
    (lambda m: m.update(cols=True), "cols"),
    (lambda m: m.update(cols="80"), "cols"),
    (lambda m: m["sandbox"].update(layers=["/a", 3]), "layers"),
    (lambda m: m["sandbox"].update(env={"A": 1}), "env"),
    (lambda m: m["sandbox"].pop("name"), "name"),
    (lambda m: m.update(agent=[]), "agent"),
    (lambda m: m.update(network=None), "network"),
    (lambda m: m.update(stop_grace=False), "stop_grace"),
])
def test_a_malformed_launch_is_refused(config: SupervisorConfig, coop_env: CoopEnv,
                                       change: object, field: str) -> None:
    message = json.loads(encode_launch(config, network="none", coop_home=coop_env.coop_home))
    assert callable(change)
    change(message)
    with pytest.raises(SupervisorError, match=field):
        decode_launch(json.dumps(message).encode())


@pytest.mark.parametrize("data", [b"", b"\xff", b"[1]", b"{"])
def test_a_launch_that_is_not_an_object_is_refused(data: bytes) -> None:
    with pytest.raises(SupervisorError, match="malformed launch request"):
        decode_launch(data)


# --- the process ------------------------------------------------------------------------

needs_busybox = needs(busybox_available(), "needs busybox-static")


@pytest.fixture
def zygote(coop_env: CoopEnv) -> Iterator[ZygoteClient]:
    client = ZygoteClient(coop_env.coop_home / "logs" / "daemon.log")
    (coop_env.coop_home / "logs").mkdir(parents=True, exist_ok=True)
    yield client
    # The zygote, its spare and the spare's coop-init (which has no marker of its own).
    family = with_descendants([client.pid]) if client.pid is not None else []
    client.close()
    for pid in family:
        stop_pid(pid, timeout=5.0)


def _launch(zygote: ZygoteClient, config: SupervisorConfig, env: CoopEnv) -> SupervisorHandle:
    return asyncio.run(zygote.launch(config, network="none", coop_home=env.coop_home))


def _spare_of(zygote_pid: int, known: set[int]) -> int:
    """The zygote's one child that is not a supervisor already known."""
    found: list[int] = []

    def spare() -> bool:
        found[:] = [p.pid for p in children(zygote_pid) if p.alive and p.pid not in known]
        return len(found) == 1

    wait_for(spare, TIMEOUT, "the zygote's spare")
    return found[0]


def _with_init(zygote_pid: int, spare: int) -> list[int] | None:
    """Zygote, spare and the spare's init, once the init is there."""
    family = with_descendants([spare])
    return [zygote_pid, *family] if len(family) == 2 else None


@needs_busybox
def test_the_zygote_forks_supervisors_that_outlive_it(
        zygote: ZygoteClient, config: SupervisorConfig, coop_env: CoopEnv) -> None:
    first = _launch(zygote, config, coop_env)
    second_config = supervisor_config(coop_env, Path(config.sandbox.layers[0]),
                                      Path(config.sandbox.workspace), "zyg2")
    second = _launch(zygote, second_config, coop_env)
    try:
        zpid = zygote.pid
        assert zpid is not None
        supervisors = {first.pid, second.pid}
        assert len(supervisors) == 2
        for handle in (first, second):
            # The zygote's child, in a session of its own; its agent runs on the PTY size.
            assert os.getsid(handle.pid) == handle.pid
            parent = proc_info(handle.pid)
            assert parent is not None and parent.ppid == zpid
            detail = info(handle.socket_path)
            assert detail["session"]["state"] == "running"
        pty = next(p for p in info(first.socket_path)["ptys"] if p["id"] == 0)
        assert (pty["cols"], pty["rows"]) == (100, 30)
        spare = _spare_of(zpid, supervisors)
        # The spare clones its waiting init after it is forked: wait for both.
        starter = wait_for(lambda: _with_init(zpid, spare), TIMEOUT, "the spare's init")
        # The daemon's end closes: zygote, spare and its init go, the sessions stay.
        zygote.close()
        wait_for(lambda: not any(pid_alive(p) for p in starter), TIMEOUT,
                 "the zygote, its spare and the spare's init to exit")
        for handle in (first, second):
            assert info(handle.socket_path)["session"]["state"] == "running"
    finally:
        stop_supervisor(first)
        stop_supervisor(second)


@needs_busybox
def test_a_killed_zygote_takes_its_spare_and_is_replaced(
        zygote: ZygoteClient, config: SupervisorConfig, coop_env: CoopEnv) -> None:
    handle = _launch(zygote, config, coop_env)
    try:
        zpid = zygote.pid
        assert zpid is not None
        spare = _spare_of(zpid, {handle.pid})
        os.kill(zpid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(spare), TIMEOUT, "the spare to follow its zygote")
        assert info(handle.socket_path)["session"]["state"] == "running"
        other = supervisor_config(coop_env, Path(config.sandbox.layers[0]),
                                  Path(config.sandbox.workspace), "zyg3")
        replacement = _launch(zygote, other, coop_env)
        try:
            assert zygote.pid not in (None, zpid)
            assert info(replacement.socket_path)["session"]["state"] == "running"
        finally:
            stop_supervisor(replacement)
    finally:
        stop_supervisor(handle)


@needs_busybox
def test_a_failed_start_is_reported_and_the_zygote_serves_on(
        zygote: ZygoteClient, coop_env: CoopEnv, busybox_layer: Path, workspace: Path,
        tmp_path: Path) -> None:
    bad = supervisor_config(coop_env, tmp_path / "no-such-layer", workspace, "zyg4")
    with pytest.raises(SupervisorError, match="layer directory does not exist"):
        _launch(zygote, bad, coop_env)
    zpid = zygote.pid
    handle = _launch(zygote, supervisor_config(coop_env, busybox_layer, workspace, "zyg5"),
                     coop_env)
    try:
        assert zygote.pid == zpid
        assert info(handle.socket_path)["session"]["state"] == "running"
    finally:
        stop_supervisor(handle)


@needs_busybox
def test_a_start_that_fails_before_the_sandbox_is_reported_too(
        zygote: ZygoteClient, config: SupervisorConfig, coop_env: CoopEnv,
        tmp_path: Path) -> None:
    """The session's log cannot be opened (a file where its directory must be): the
    reply says so, rather than the daemon seeing only an exit."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    bad = supervisor_config(coop_env, Path(config.sandbox.layers[0]),
                            Path(config.sandbox.workspace), "zyg7",
                            log_file=blocker / "zyg7.log")
    with pytest.raises(SupervisorError, match=r"FileExistsError|NotADirectoryError"):
        _launch(zygote, bad, coop_env)
    handle = _launch(zygote, config, coop_env)
    try:
        assert info(handle.socket_path)["session"]["state"] == "running"
    finally:
        stop_supervisor(handle)


@needs_busybox
def test_a_launch_too_large_for_one_record_is_refused_and_the_zygote_serves_on(
        zygote: ZygoteClient, config: SupervisorConfig, coop_env: CoopEnv) -> None:
    """Larger than MAX_LAUNCH (yet far under the daemon's 1 MiB frames): refused with a
    clear error, and the zygote that would have got it is the one that serves next."""
    big = supervisor_config(coop_env, Path(config.sandbox.layers[0]),
                            Path(config.sandbox.workspace), "zyg6",
                            agent_env={"BIG": "x" * 150_000})
    handle = _launch(zygote, config, coop_env)
    zpid = zygote.pid
    try:
        with pytest.raises(SupervisorError, match="configuration is too large"):
            _launch(zygote, big, coop_env)
        assert zygote.pid == zpid and zpid is not None and pid_alive(zpid)
        assert info(handle.socket_path)["session"]["state"] == "running"
        big.agent_env = {"BIG": "x" * 100_000}  # under the limit: it goes through
        other = _launch(zygote, big, coop_env)
        try:
            assert zygote.pid == zpid
            assert info(other.socket_path)["session"]["state"] == "running"
        finally:
            stop_supervisor(other)
    finally:
        stop_supervisor(handle)


@needs_busybox
def test_a_session_imports_nothing_the_zygote_did_not(
        zygote: ZygoteClient, config: SupervisorConfig, coop_env: CoopEnv) -> None:
    """A module a session imports late costs every session its time and a private copy
    (it once cost ~1 MB and 3 ms each): the supervisor lists any at its end."""
    handle = _launch(zygote, config, coop_env)
    assert info(handle.socket_path)["session"]["state"] == "running"
    stop_supervisor(handle)
    assert config.log_file is not None
    log = config.log_file.read_text()
    assert "serving on" in log  # the log is the session's, and complete
    assert "imported after the zygote's preload" not in log, log
