"""The sandbox for real: namespaces, overlay root, the init, PTYs, teardown, escapes.

Runs as root (single mapping) and as the test user (its subuid range), on Debian's static
busybox as the only layer (no Python inside), and on image = "host".
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from busybox_sandbox import busybox_config, home_workspace
from sandbox_helpers import ok, read_until_eof, run

from coop_build.idmap import choose_idmap
from coop_build.paths import CoopPaths
from coop_run.errors import BindPathError, SandboxError
from coop_run.layout import SessionDir
from coop_run.sandbox import caps, initproto
from coop_run.sandbox.clone import prepare_init
from coop_run.sandbox.config import SandboxConfig
from coop_run.sandbox.host import Sandbox
from coop_run.sandbox.network.modes import network_for
from coop_run.sandbox.sessiondirs import reap_stale_in
from support.bench import CoopEnv
from support.procs import children, stop_pid, wait_for
from support.require import needs, require
from support.rootfs import busybox_available, make_busybox_rootfs

pytestmark = needs(busybox_available(), "needs busybox-static")

TIMEOUT = 10.0
MakeConfig = Callable[..., SandboxConfig]


@pytest.fixture
def workspace(coop_env: CoopEnv) -> Path:
    return home_workspace(coop_env)


@pytest.fixture
def make_config(coop_env: CoopEnv, busybox_layer: Path, workspace: Path) -> MakeConfig:
    def make(name: str = "proj", **changes: Any) -> SandboxConfig:
        return busybox_config(coop_env, busybox_layer, workspace, name,
                              **{"env": {"GREETING": "hello"}, **changes})

    return make


@pytest.fixture
def sandboxes() -> Iterator[list[Sandbox]]:
    """Sandboxes a test starts; any still running at the end are killed."""
    started: list[Sandbox] = []
    yield started
    for sandbox in started:
        with contextlib.suppress(SandboxError):
            sandbox.stop(force=True)


@pytest.fixture
def start(make_config: MakeConfig, sandboxes: list[Sandbox]) -> Callable[..., Sandbox]:
    def go(name: str = "proj", **changes: Any) -> Sandbox:
        sandbox = Sandbox(make_config(name, **changes))
        sandboxes.append(sandbox)
        sandbox.start()
        return sandbox

    return go


# --- identity, environment, PTY ------------------------------------------------------


def test_identity_environment_and_hostname(start: Callable[..., Sandbox],
                                           workspace: Path) -> None:
    sandbox = start("proj")
    out = ok(sandbox, "hostname; id -u; pwd; cat /etc/hostname; env")
    lines = out.splitlines()
    assert lines[:4] == ["proj", "0", "/workspace", "proj"]
    env = dict(line.split("=", 1) for line in lines[4:] if "=" in line)
    assert env["COOP_SESSION"] == "proj"
    assert env["COOP_WORKSPACE"] == str(workspace.resolve())
    assert abs(int(env["COOP_CREATED"]) - time.time()) < 60
    assert env["TERM"] == "xterm-256color"
    assert env["HOME"] == "/root"
    assert env["GREETING"] == "hello"
    assert "/usr/bin" in env["PATH"]
    # A client's TERM wins over the default; HOME and COOP_* cannot be overridden.
    code, out = run(sandbox, 'echo "$TERM $HOME $COOP_SESSION"',
                    env={"TERM": "screen", "HOME": "/x", "COOP_SESSION": "other"})
    assert (code, out) == (0, "screen /root proj\n")


def test_pty_belongs_to_the_sandbox_devpts(start: Callable[..., Sandbox]) -> None:
    sandbox = start()
    proc = sandbox.spawn(["sh", "-c", 'tty; t=$(tty); test -c "$t" && echo exists; '
                          "stty size; : </dev/tty && echo controlling"],
                         pty=True, cols=91, rows=37)
    assert proc.master_fd is not None
    try:
        out = read_until_eof(proc.master_fd)
    finally:
        os.close(proc.master_fd)
    assert sandbox.wait(proc.pid, TIMEOUT).returncode == 0
    lines = out.replace("\r", "").splitlines()
    assert lines[0] == proc.pts
    assert proc.pts is not None and proc.pts.startswith("/dev/pts/")
    assert lines[1] == "exists"
    assert lines[2] == "37 91"
    assert lines[3] == "controlling"  # /dev/tty opens only with a controlling terminal


# --- the init -------------------------------------------------------------------------


def test_an_abandoned_process_leaves_no_exit_behind(start: Callable[..., Sandbox]) -> None:
    """A process whose spawn's caller gave up: its exit is forgotten, whether it comes
    after ``abandon`` or was already recorded, so a later process with its pid is not
    taken for exited. (An init reaps in order: a process that waits until the first is
    reaped ends after it, and its exit is read after the first's.)"""
    sandbox = start()
    heard: list[int] = []
    sandbox.on_exit = lambda pid, _status: heard.append(pid)

    def reaped_after(pid: int) -> None:
        waiter = sandbox.spawn(["sh", "-c", f"while kill -0 {pid} 2>/dev/null; do :; done"])
        assert sandbox.wait(waiter.pid, TIMEOUT).returncode == 0

    stdin_r, stdin_w = os.pipe()
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        before = sandbox.spawn(["sh", "-c", "read line"], stdio=(stdin_r, null, null))
    finally:
        os.close(stdin_r)
        os.close(null)
    sandbox.abandon(before.pid)  # nobody serves it from here; then it ends
    os.close(stdin_w)
    reaped_after(before.pid)
    assert sandbox.poll_exit(before.pid) is None and before.pid not in heard

    after = sandbox.spawn(["true"])
    reaped_after(after.pid)  # recorded first, then abandoned
    assert sandbox.poll_exit(after.pid) is not None
    sandbox.abandon(after.pid)
    assert sandbox.poll_exit(after.pid) is None




def test_agent_restarts_in_the_same_namespaces(start: Callable[..., Sandbox]) -> None:
    sandbox = start()
    probe = "readlink /proc/self/ns/mnt /proc/self/ns/pid /proc/self/ns/user; stat -c %i /proc/1"
    first = ok(sandbox, probe)
    agent = sandbox.spawn(["sh", "-c", "exit 3"], pty=True)
    assert agent.master_fd is not None
    assert sandbox.wait(agent.pid, TIMEOUT).returncode == 3
    os.close(agent.master_fd)
    agent = sandbox.spawn(["sleep", "1000"], pty=True)  # started again, later
    assert agent.master_fd is not None
    assert ok(sandbox, probe) == first
    # A shell spawned later sees the agent's process.
    out = ok(sandbox, f"cat /proc/{agent.pid}/cmdline | tr '\\0' ' '")
    assert out.strip() == "sleep 1000"
    assert agent.host_pid is not None
    status = Path(f"/proc/{agent.host_pid}/status").read_text()
    assert f"NSpid:\t{agent.host_pid}\t{agent.pid}" in status
    sandbox.signal(agent.pid, signal.SIGTERM)
    assert sandbox.wait(agent.pid, TIMEOUT).signal == signal.SIGTERM
    os.close(agent.master_fd)


def test_init_ignores_signals_from_inside_and_forwards_those_from_outside(
        start: Callable[..., Sandbox]) -> None:
    sandbox = start()
    sleeper = sandbox.spawn(["sleep", "1000"])
    ok(sandbox, "kill -TERM 1; kill -HUP 1; kill -INT 1")
    assert sandbox.alive
    assert sandbox.poll_exit(sleeper.pid) is None
    assert ok(sandbox, f"test -d /proc/{sleeper.pid} && echo there").strip() == "there"
    assert sandbox.init_pid is not None
    os.kill(sandbox.init_pid, signal.SIGTERM)  # from the host: goes to everyone inside
    assert sandbox.wait(sleeper.pid, TIMEOUT).signal == signal.SIGTERM
    assert sandbox.alive  # the namespace outlives its processes
    assert ok(sandbox, "echo still").strip() == "still"


def test_pump_delivers_exit_events_to_a_callback(start: Callable[..., Sandbox]) -> None:
    sandbox = start()
    seen: list[tuple[int, int]] = []
    sandbox.on_exit = lambda pid, status: seen.append((pid, status.returncode))
    proc = sandbox.spawn(["sh", "-c", "exit 7"])
    control = sandbox.control_fd
    assert control is not None

    def pumped() -> bool:
        select.select([control], [], [], 0.05)
        sandbox.pump()
        return bool(seen)

    wait_for(pumped, TIMEOUT, "the exit event")
    assert seen == [(proc.pid, 7)]


@pytest.mark.parametrize("force", [False, True])
def test_stop_ends_processes_that_ignore_sigterm(start: Callable[..., Sandbox],
                                                 force: bool) -> None:
    sandbox = start()
    stubborn = sandbox.spawn(["sh", "-c", "trap '' TERM; sleep 1000; echo done"])
    assert stubborn.host_pid is not None
    host_pid = stubborn.host_pid
    # Once sleep runs, the shell has set its trap (and sleep inherited the ignore).
    wait_for(lambda: _children_named(host_pid, "sleep"), TIMEOUT, "the shell to start sleep")
    began = time.monotonic()
    sandbox.stop(grace=0.5, force=force)
    elapsed = time.monotonic() - began
    assert not Path(f"/proc/{stubborn.host_pid}").exists()
    assert sandbox.init_pid is not None and not Path(f"/proc/{sandbox.init_pid}").exists()
    if not force:
        assert elapsed >= 0.5  # SIGTERM was ignored: only the SIGKILL after the grace ended it


def _children_named(pid: int, name: str) -> bool:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return any(Path(f"/proc/{kid}/comm").read_text().strip() == name for kid in kids)
    except FileNotFoundError:
        return False


def test_spawn_failures_are_clean_errors(start: Callable[..., Sandbox]) -> None:
    sandbox = start()
    with pytest.raises(SandboxError, match="cannot run no-such-program"):
        sandbox.spawn(["no-such-program"])
    with pytest.raises(SandboxError, match="cannot change to /nowhere"):
        sandbox.spawn(["true"], cwd="/nowhere")
    with pytest.raises(SandboxError, match="cannot signal the init"):
        sandbox.signal(1, signal.SIGKILL)
    assert ok(sandbox, "echo fine").strip() == "fine"


# --- filesystem ----------------------------------------------------------------------


def test_workspace_edits_visible_both_ways_at_once(start: Callable[..., Sandbox],
                                                   workspace: Path) -> None:
    sandbox = start()
    (workspace / "from-host").write_text("host wrote\n")
    assert ok(sandbox, "cat /workspace/from-host") == "host wrote\n"
    ok(sandbox, "echo inside wrote > /workspace/from-inside")
    assert (workspace / "from-inside").read_text() == "inside wrote\n"


def test_writes_to_root_land_in_the_upper_only(start: Callable[..., Sandbox],
                                               busybox_layer: Path) -> None:
    sandbox = start()
    before = sorted(p.name for p in busybox_layer.iterdir())
    ok(sandbox, "echo new > /newfile; echo x >> /etc/passwd; rm /bin/vi; mkdir /opt")
    upper = sandbox.sdir.upper
    assert (upper / "newfile").read_text() == "new\n"
    assert (upper / "etc" / "passwd").read_text().endswith("x\n")
    assert (upper / "opt").is_dir()
    assert sorted(p.name for p in busybox_layer.iterdir()) == before
    assert not (busybox_layer / "etc" / "passwd").read_text().endswith("x\n")
    assert (busybox_layer / "bin" / "vi").is_symlink()


def test_persist_survives_stop_and_start_upper_does_not(start: Callable[..., Sandbox],
                                                         coop_env: CoopEnv) -> None:
    sandbox = start()
    ok(sandbox, "echo kept > /root/.cache/note; echo gone > /root/scratch")
    sdir = sandbox.sdir
    assert (sdir.upper / "root" / "scratch").exists()
    sandbox.stop()
    assert not sdir.upper.exists() and not sdir.work.exists() and not sdir.root.exists()
    assert not sdir.sandbox_state.exists()
    assert (sdir.persist / ".cache" / "note").read_text() == "kept\n"
    again = start()
    assert ok(again, "cat /root/.cache/note; test -e /root/scratch || echo fresh") == (
        "kept\nfresh\n")


def test_stop_removes_files_owned_by_other_ids(start: Callable[..., Sandbox]) -> None:
    sandbox = start()
    if not sandbox.idmap.full:
        # Root has no subordinate range on the bench (test_bench_users checks it): its run
        # cannot test this, the test user's does. A user without a range is a broken bench.
        if os.geteuid() == 0:
            pytest.skip("only the single id is mapped: no other owners can exist")
        require(False, "only the single id is mapped: the test user has no subordinate range")
    ok(sandbox, "mkdir -p /srv/x/y && touch /srv/x/y/f && chown -R 1:1 /srv/x && "
                "chmod 700 /srv/x /srv/x/y && rm /bin/ls")
    upper = sandbox.sdir.upper
    assert (upper / "srv" / "x").stat().st_uid != os.getuid()
    sandbox.stop()
    assert not upper.exists() and not sandbox.sdir.work.exists()


def test_old_root_and_host_files_are_invisible(start: Callable[..., Sandbox],
                                               coop_env: CoopEnv) -> None:
    canary = coop_env.home / "canary"
    canary.write_text("c4n4ry-content\n")
    sandbox = start()
    out = ok(sandbox, f"cat {canary} || echo no-cat; ls {coop_env.home} || echo no-ls; "
                      "ls -a /; cat /proc/mounts")
    assert "c4n4ry-content" not in out
    assert "no-cat" in out and "no-ls" in out
    assert "canary" not in out.split()
    assert str(coop_env.coop_home) not in out  # the layer and upper paths are not shown
    assert str(Path(sys.executable).parent) not in out


def test_a_symlink_in_the_image_cannot_steer_a_mount_onto_the_host(
        start: Callable[..., Sandbox], busybox_layer: Path, workspace: Path,
        tmp_path: Path) -> None:
    host_dir = tmp_path / "host-side"
    host_dir.mkdir()
    top = tmp_path / "top-layer"
    top.mkdir()
    (top / "work").symlink_to(host_dir)          # absolute: means the host before pivot
    (top / "up").symlink_to("../../../../../..")  # climbs: stops at the new root
    (workspace / "marker").write_text("ws\n")
    sandbox = start(layers=[busybox_layer, top], workspace_inside="/up/work/proj")
    assert not (host_dir / "proj").exists()      # nothing was made or mounted on the host
    assert ok(sandbox, "cat /work/proj/marker").strip() == "ws"
    assert ok(sandbox, f"cat {host_dir}/proj/marker").strip() == "ws"  # inside the root
    assert ok(sandbox, "echo inside > /work/proj/new; echo done").strip() == "done"
    assert (workspace / "new").read_text() == "inside\n"


def test_a_symlink_loop_under_a_mount_point_fails_the_start(
        make_config: MakeConfig, sandboxes: list[Sandbox], busybox_layer: Path,
        tmp_path: Path) -> None:
    top = tmp_path / "top-layer"
    top.mkdir()
    (top / "loop").symlink_to("loop")
    sandbox = Sandbox(make_config("loopy", layers=[busybox_layer, top],
                                  workspace_inside="/loop/proj"))
    sandboxes.append(sandbox)
    with pytest.raises(SandboxError, match="Too many levels of symbolic links"):
        sandbox.start()


def test_host_processes_are_invisible_and_unsignalable(start: Callable[..., Sandbox]) -> None:
    helper = subprocess.Popen(["sleep", "1000"])
    try:
        sandbox = start()
        out = ok(sandbox, "ls /proc | grep -E '^[0-9]+$'")
        pids = {int(p) for p in out.split()}
        assert pids and max(pids) < 100  # only the namespace's own small pids
        code, out = run(sandbox, f"kill -9 {helper.pid}; kill -9 {os.getpid()}")
        assert code != 0
        assert helper.poll() is None
    finally:
        stop_pid(helper.pid, timeout=5.0)
        helper.wait()


def test_capabilities_that_would_undo_the_sandbox_are_gone(
        start: Callable[..., Sandbox]) -> None:
    sandbox = start()
    status = ok(sandbox, "cat /proc/self/status")
    effective = caps.status_mask(status)
    for cap in (caps.CAP_SYS_ADMIN, caps.CAP_NET_ADMIN, caps.CAP_SYS_PTRACE,
                caps.CAP_SYS_MODULE):
        assert not effective & (1 << cap)
    assert effective & (1 << caps.CAP_CHOWN)
    code, out = run(sandbox, "mkdir -p /mnt; mount -t tmpfs none /mnt")
    assert code != 0, out
    code, out = run(sandbox, "umount /workspace")
    assert code != 0, out
    code, out = run(sandbox, "ip link set lo down || ifconfig lo down")
    assert code != 0, out
    if sandbox.idmap.full:  # other ids exist only with a subuid range
        assert ok(sandbox, "chown 1:1 /tmp && echo chowned").strip() == "chowned"


def test_image_host_runs_host_binaries(start: Callable[..., Sandbox]) -> None:
    """image = "host": the host's programs run; its directories are the lowest layers,
    so what the session writes there lands in its own upper, never on the host."""
    sandbox = start("hosty", layers=[], host_image=True, network=None)
    name = f"coop-test-{uuid.uuid4().hex[:12]}"
    out = ok(sandbox, f"/usr/bin/env | grep COOP_SESSION; hostname; echo mine > /usr/{name}; "
                      f"cat /usr/{name}; test -L /bin && readlink /bin || echo dir")
    assert out.splitlines() == ["COOP_SESSION=hosty", "hosty", "mine",
                                os.readlink("/bin") if Path("/bin").is_symlink() else "dir"]
    assert not Path("/usr", name).exists()
    written = [p for p in sandbox.sdir.host.glob(f"upper*/{name}")]
    assert [p.read_text() for p in written] == ["mine\n"]


@pytest.mark.parametrize("source", ["default", "network_for"])
def test_network_mode_none_has_only_loopback(start: Callable[..., Sandbox],
                                             coop_env: CoopEnv, source: str) -> None:
    net = (None if source == "default"
           else network_for("none", session="netless", paths=CoopPaths(coop_env.coop_home)))
    sandbox = start("netless", network=net)
    out = ok(sandbox, "cat /proc/net/dev")
    interfaces = {line.split(":")[0].strip() for line in out.splitlines()[2:]}
    assert interfaces == {"lo"}
    assert "UP" in ok(sandbox, "ip link show lo")


def test_network_mode_host_shares_the_host_stack(start: Callable[..., Sandbox],
                                                 coop_env: CoopEnv) -> None:
    net = network_for("host", session="hostnet", paths=CoopPaths(coop_env.coop_home))
    sandbox = start("hostnet", network=net)
    out = ok(sandbox, "cat /proc/net/dev")
    inside = {line.split(":")[0].strip() for line in out.splitlines()[2:]}
    host = {line.split(":")[0].strip()
            for line in Path("/proc/net/dev").read_text().splitlines()[2:]}
    assert inside == host


# --- bind safety ---------------------------------------------------------------------


def test_persist_symlink_pointing_out_is_refused(make_config: MakeConfig,
                                                 sandboxes: list[Sandbox]) -> None:
    config = make_config("linky")
    persist = SessionDir(config.session_dir).persist
    persist.mkdir(parents=True)
    (persist / ".cache").symlink_to("/etc")
    sandbox = Sandbox(config)
    sandboxes.append(sandbox)
    with pytest.raises(BindPathError, match="outside your home"):
        sandbox.start()
    assert not SessionDir(config.session_dir).upper.exists()


def test_start_failures_are_clean(start: Callable[..., Sandbox], make_config: MakeConfig,
                                  sandboxes: list[Sandbox], tmp_path: Path) -> None:
    running = start("twice")
    second = Sandbox(make_config("twice"))
    sandboxes.append(second)
    with pytest.raises(SandboxError) as info:
        second.start()
    assert info.value.code == "SESSION_EXISTS"
    assert running.sdir.upper.is_dir()  # the running session's files are untouched
    assert ok(running, "echo alive").strip() == "alive"
    missing = Sandbox(make_config("nolayer", layers=[tmp_path / "missing"]))
    sandboxes.append(missing)
    with pytest.raises(SandboxError) as info:
        missing.start()
    assert info.value.code == "ROOTFS_NOT_BUILT"
    with pytest.raises(SandboxError, match="nolayer is stopped"):
        missing.spawn(["true"])


def test_a_request_that_cannot_be_sent_is_refused_and_the_sandbox_serves_on(
        start: Callable[..., Sandbox]) -> None:
    sandbox = start("sender")
    not_open = 1 << 20  # above any descriptor this process has: sendmsg says EBADF
    with pytest.raises(SandboxError, match="cannot send spawn to sandbox sender") as failure:
        sandbox.spawn(["true"], stdio=(not_open, not_open, not_open))
    assert failure.value.code != "SANDBOX_STOPPED"
    assert ok(sandbox, "echo on").strip() == "on"


def test_pipelined_start_runs_the_first_spawn_when_ready(make_config: MakeConfig,
                                                         sandboxes: list[Sandbox]) -> None:
    sandbox = Sandbox(make_config("piped"))
    sandboxes.append(sandbox)
    sandbox.start(wait_ready=False)
    assert run(sandbox, "hostname; cat /proc/1/cmdline >/dev/null && echo inside") == (
        0, "piped\ninside\n")
    assert sandbox.state == "running"


SETUP_FAILURE = "sandbox setup failed: tmpfs on /tmp: Not a directory"


@pytest.mark.parametrize("wait_ready", [True, False])
def test_init_setup_failure_is_reported(make_config: MakeConfig, sandboxes: list[Sandbox],
                                        tmp_path: Path, wait_ready: bool) -> None:
    layer = make_busybox_rootfs(tmp_path / "broken")
    (layer / "tmp").rmdir()
    (layer / "tmp").write_text("a file where /tmp must be mounted\n")
    sandbox = Sandbox(make_config("broken", layers=[layer]))
    sandboxes.append(sandbox)
    if wait_ready:
        with pytest.raises(SandboxError, match=SETUP_FAILURE):
            sandbox.start()
        assert sandbox.state == "stopped"
    else:
        sandbox.start(wait_ready=False)
        with pytest.raises(SandboxError, match=SETUP_FAILURE):
            sandbox.spawn(["true"])
        sandbox.stop()
    assert not sandbox.sdir.upper.exists()
    assert sandbox.init_pid is not None and not Path(f"/proc/{sandbox.init_pid}").exists()


# --- races with start-up and teardown ------------------------------------------------


ROUNDS = 8


def test_spawns_racing_start_and_stop_never_run_outside(make_config: MakeConfig,
                                                        sandboxes: list[Sandbox],
                                                        workspace: Path) -> None:
    """Every spawn either runs inside or is refused and never runs. Several rounds: a
    reply lost at teardown showed up in about one round in fifty."""
    for _ in range(ROUNDS):
        race_spawns_with_start_and_stop(make_config, sandboxes, workspace)


def race_spawns_with_start_and_stop(make_config: MakeConfig, sandboxes: list[Sandbox],
                                    workspace: Path) -> None:
    sandbox = Sandbox(make_config("racer"))
    sandboxes.append(sandbox)
    log = workspace / "log"
    log.unlink(missing_ok=True)
    marker = "/workspace/log"
    done = threading.Event()
    results: list[str] = []
    lock = threading.Lock()

    def fire() -> None:
        while not done.is_set():
            try:
                proc = sandbox.spawn(["sh", "-c", f"echo $(hostname) >> {marker}"])
            except SandboxError as exc:
                outcome = f"refused {exc.code}"
            else:
                with contextlib.suppress(SandboxError):
                    sandbox.wait(proc.pid, TIMEOUT)
                outcome = "ran"
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=fire) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        sandbox.start()
        wait_for(lambda: results.count("ran") >= 5, TIMEOUT, "spawns to run")
        sandbox.stop(grace=2.0)
        wait_for(lambda: sum(r.startswith("refused") for r in results) >= 3, TIMEOUT,
                 "spawns after stop to be refused")
    finally:
        done.set()
        for thread in threads:
            thread.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a test thread did not stop"
    lines = log.read_text().splitlines()
    assert lines and set(lines) == {"racer"}
    assert len(lines) <= results.count("ran"), "a spawn reported refused ran"
    assert not Path(marker).exists() or Path(marker).resolve() == log.resolve()
    refused = {r for r in results if r != "ran"}
    assert refused <= {"refused SANDBOX_STOPPED", "refused SANDBOX_FAILED"}


def test_spawn_before_start_waits_for_ready(make_config: MakeConfig,
                                            sandboxes: list[Sandbox]) -> None:
    sandbox = Sandbox(make_config("early"))
    sandboxes.append(sandbox)
    outcome: list[Any] = []

    def early() -> None:
        try:
            outcome.append(run(sandbox, "hostname"))
        except SandboxError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=early)
    thread.start()
    sandbox.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "a test thread did not stop"
    assert outcome == [(0, "early\n")]


# --- crash safety --------------------------------------------------------------------

CREATOR = textwrap.dedent("""
    import sys
    from pathlib import Path
    from coop_run.sandbox.config import SandboxConfig
    from coop_run.sandbox.host import Sandbox
    layer, session_dir, workspace, home = (Path(a) for a in sys.argv[1:5])
    sandbox = Sandbox.create(SandboxConfig(name="orphan", layers=[layer],
                             session_dir=session_dir, workspace=workspace, user_home=home))
    print(sandbox.init_pid, flush=True)
    sys.stdin.read()
""")


def test_stale_sandbox_is_reaped_after_its_creator_is_killed(
        busybox_layer: Path, coop_env: CoopEnv, workspace: Path) -> None:
    session_dir = CoopPaths(coop_env.coop_home).sessions / "orphan"
    with subprocess.Popen(
        [sys.executable, "-c", CREATOR, str(busybox_layer), str(session_dir),
         str(workspace), str(coop_env.home)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as creator:
        try:
            assert creator.stdout is not None
            init_pid = int(creator.stdout.readline())
            sdir = SessionDir(session_dir)
            assert sdir.upper.is_dir()
            assert reap_stale_in(session_dir.parent) == []  # alive: left alone
            creator.kill()
            creator.wait()
            # The init lost its control socket: it ends the sandbox by itself.
            wait_for(lambda: not Path(f"/proc/{init_pid}").exists()
                     or "Z" in Path(f"/proc/{init_pid}/stat").read_text().split(")")[-1][:3],
                     TIMEOUT, "the orphaned init to exit")
            assert sdir.upper.is_dir()  # nothing cleaned it yet
            assert reap_stale_in(session_dir.parent) == ["orphan"]
            assert not sdir.upper.exists() and not sdir.work.exists()
            assert not sdir.sandbox_state.exists()
        finally:
            if creator.poll() is None:
                stop_pid(creator.pid, timeout=5.0)
                creator.wait()


# --- an init prepared ahead (a session starter's spare) ---------------------------------


def test_a_prepared_init_becomes_the_sandbox(make_config: MakeConfig,
                                             sandboxes: list[Sandbox]) -> None:
    config = make_config("ahead")
    prepared = prepare_init(choose_idmap(), unshare_net=True)
    sandbox = Sandbox(config, prepared=prepared)
    sandboxes.append(sandbox)
    sandbox.start()
    assert sandbox.init_pid == prepared.pid
    assert ok(sandbox, "hostname; cat /proc/net/dev | grep -c :").split() == ["ahead", "1"]
    sandbox.stop(force=True)
    assert not Path(f"/proc/{prepared.pid}").exists()


def test_a_prepared_init_for_other_namespaces_is_discarded(
        make_config: MakeConfig, sandboxes: list[Sandbox], coop_env: CoopEnv) -> None:
    net = network_for("host", session="hostly", paths=CoopPaths(coop_env.coop_home))
    prepared = prepare_init(choose_idmap(), unshare_net=True)
    sandbox = Sandbox(make_config("hostly", network=net), prepared=prepared)
    sandboxes.append(sandbox)
    sandbox.start()
    assert sandbox.init_pid != prepared.pid
    assert not Path(f"/proc/{prepared.pid}").exists()  # ended and reaped, not a zombie
    assert ok(sandbox, "hostname").strip() == "hostly"
    # The host's stack: every host interface, not only a fresh loopback.
    assert int(ok(sandbox, "cat /proc/net/dev | grep -c :")) >= 1


def test_an_unused_prepared_init_ends_without_a_trace(coop_env: CoopEnv) -> None:
    before = {c.pid for c in children()}
    prepared = prepare_init(choose_idmap(), unshare_net=True)
    assert Path(f"/proc/{prepared.pid}").exists()
    prepared.discard()
    assert not Path(f"/proc/{prepared.pid}").exists()
    assert {c.pid for c in children()} <= before  # nothing else of it either


def test_an_init_given_a_bad_setup_reports_it_and_exits(coop_env: CoopEnv) -> None:
    prepared = prepare_init(choose_idmap(), unshare_net=True)
    try:
        initproto.send(prepared.sock, {"op": "setup", "hostname": "x", "child_caps": []})
        initproto.send(prepared.sock, {"op": "fresh", "fstype": "tmpfs", "target": "/tmp",
                                       "flags": 0})
        assert select.select([prepared.sock], [], [], TIMEOUT)[0]
        received = initproto.recv(prepared.sock)
        assert received is not None
        assert received.message == {
            "op": "failed", "message": "sandbox setup failed: fresh before the overlay"}
    finally:
        prepared.discard()
    assert not Path(f"/proc/{prepared.pid}").exists()
