"""The escape suite (issue 3 point 6, SPEC 12): what an agent inside a real sandbox cannot do.

Real ``Sandbox`` on Debian's static busybox (no Python inside), real network modes, run as
root (single mapping, ``veth`` = veth pair + NAT) and as the test user (subuid range,
``veth`` = pasta). Every command runs as the agent does: a child of the sandbox init,
without the capabilities it drops. Every address contacted is on loopback or in a network
namespace made by the test bench (tests/coop_run/sandbox/network/net_topology.py).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from busybox_sandbox import busybox_config, home_workspace
from sandbox_helpers import TIMEOUT, read_until_eof
from sandbox_helpers import ok as sandbox_ok
from sandbox_helpers import run as sandbox_run
from supervisor_client import Stream
from supervisor_client import request as supervisor_request

from coop_build.build import Builder
from coop_build.layers import load_coopfile
from coop_build.paths import CoopPaths
from coop_build.store import Store
from coop_run.errors import SandboxError
from coop_run.sandbox import caps
from coop_run.sandbox.host import Sandbox, child_capabilities
from coop_run.sandbox.mountfds import owner_userns
from coop_run.sandbox.network.base import NetworkMode
from coop_run.sandbox.network.modes import network_for
from coop_run.session.config import SupervisorConfig
from coop_run.session.process import start_supervisor
from support.bench import CoopEnv
from support.host_secrets import mask_probe, planted_secrets
from support.procs import stop_pid, wait_for
from support.require import needs
from support.rootfs import busybox_available, make_busybox_rootfs

sys.path.insert(0, str(Path(__file__).resolve().parent / "network"))
import net_topology as topo
from net_bench import provide_topology

pytestmark = needs(busybox_available(), "needs busybox-static")

IS_ROOT = os.geteuid() == 0
BUSYBOX_SH = ("/bin/busybox", "sh")
Start = Callable[..., Sandbox]


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def escape_topology() -> Iterator[None]:
    """The "internet" and "LAN" test namespaces (made here as root if absent)."""
    yield from provide_topology()


@pytest.fixture
def workspace(coop_env: CoopEnv) -> Path:
    return home_workspace(coop_env)


@pytest.fixture
def start(coop_env: CoopEnv, busybox_layer: Path, workspace: Path) -> Iterator[Start]:
    """Starts sandboxes (busybox layer, persist ``.cache``); all are stopped at the end."""
    started: list[Sandbox] = []

    def go(name: str = "esc", **changes: Any) -> Sandbox:
        sandbox = Sandbox(busybox_config(coop_env, busybox_layer, workspace, name, **changes))
        started.append(sandbox)
        sandbox.start()
        return sandbox

    yield go
    for sandbox in started:
        with contextlib.suppress(SandboxError):
            sandbox.stop(force=True)


def net(mode: str, env: CoopEnv, name: str, tmp_path: Path) -> NetworkMode:
    """A real network mode whose upstream resolver is the test DNS server ("internet")."""
    resolv = tmp_path / f"host-resolv-{name}.conf"
    resolv.write_text(f"nameserver {topo.INET_ADDR}\n")
    mode_obj: NetworkMode = network_for(mode, session=name, paths=CoopPaths(env.coop_home),
                                        resolv_path=resolv)
    return mode_obj


@pytest.fixture
def loopback_service() -> Iterator[int]:
    """A TCP service on the host's 127.0.0.1 answering "host-loopback"."""
    yield from _service("127.0.0.1")


@pytest.fixture
def any_address_service() -> Iterator[int]:
    """A TCP service on all the host's addresses (0.0.0.0) answering "host-loopback"."""
    yield from _service("0.0.0.0")


def _service(addr: str) -> Iterator[int]:
    srv = socket.socket()
    srv.bind((addr, 0))
    srv.listen(16)
    with _answering(srv, b"host-loopback\n"):
        yield int(srv.getsockname()[1])


@contextlib.contextmanager
def _answering(srv: socket.socket, reply: bytes) -> Iterator[None]:
    """Answer every connection to the listening ``srv`` with ``reply`` (in a thread) for
    the block; then stop, join and close."""
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if select.select([srv], [], [], 0.1)[0]:
                conn, _ = srv.accept()
                with conn:
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(TIMEOUT)
        srv.close()
    assert not thread.is_alive(), "a test thread did not stop"


# --- running things inside ------------------------------------------------------------


def run(sandbox: Sandbox, script: str) -> tuple[int, str]:
    """``busybox sh -c script`` inside as the agent would run it; (returncode, output)."""
    return sandbox_run(sandbox, script, shell=BUSYBOX_SH)


def ok(sandbox: Sandbox, script: str) -> str:
    return sandbox_ok(sandbox, script, shell=BUSYBOX_SH)


def probe_tcp(sandbox: Sandbox, targets: dict[str, tuple[str, int]]) -> dict[str, str]:
    """Connects to every (host, port) at once from inside with busybox nc; name -> what
    came back ("ok:<first line>" or "fail:<nc's message>").

    stdin is a FIFO opened read-write: nc never sees end-of-file, so it never half-closes
    (pasta does not pass the server's FIN on after the client's), and ends when the
    server closes; ``timeout`` bounds everything.
    """
    jobs = " ".join(f"p {name} {host} {port} &" for name, (host, port) in targets.items())
    script = ("mkfifo /tmp/.probe 2>/dev/null; "
              "p() { timeout 6 nc -w 3 $2 $3 <>/tmp/.probe >/tmp/.p.$1 2>&1; "
              "echo \"rc=$?\" >>/tmp/.p.$1; }; "
              f"{jobs} wait; "
              "for n in " + " ".join(targets) + "; do echo \"== $n\"; cat /tmp/.p.$n; done")
    out = ok(sandbox, script)
    results: dict[str, str] = {}
    for block in out.split("== ")[1:]:
        name, _, body = block.partition("\n")
        lines = [x for x in body.splitlines() if x.strip()]
        rc = lines[-1] if lines else ""
        text = lines[0] if len(lines) > 1 else ""
        results[name] = f"ok:{text}" if rc == "rc=0" else f"fail:{' '.join(lines[:-1])}"
    assert set(results) == set(targets), out
    return results


def cap_eff(sandbox: Sandbox) -> int:
    return caps.status_mask(ok(sandbox, "cat /proc/self/status"))


# --- 1. files ---------------------------------------------------------------------------


def test_host_files_are_invisible_and_the_host_root_unreachable(
        start: Start, coop_env: CoopEnv, workspace: Path) -> None:
    token = f"c4n4ry-{uuid.uuid4().hex}"
    canaries = [coop_env.home / "canary"]
    if IS_ROOT:  # only root can drop canaries in the host's /root and /etc
        canaries += [Path("/root") / f"coop-{token}", Path("/etc") / f"coop-{token}"]
    try:
        for path in canaries:
            path.write_text(token + "\n")
        (workspace / "marker").write_text(f"in the workspace: {token}\n")  # positive control
        sandbox = start()
        host_root = os.stat("/")
        # Every spelling of the canaries (and of a host-only file) that might get through.
        paths = [str(p) for p in canaries] + ["/etc/debian_version"]
        tricks = []
        for p in paths:
            tricks += [p, f"/proc/1/root{p}", f"/proc/self/root{p}", f"/proc/1/cwd/..{p}",
                       f"/workspace/../../../..{p}", f"{workspace}/../{Path(p).name}",
                       f"/workspace/../{Path(p).name}", f"/proc/self/cwd/../{Path(p).name}"]
        script = "; ".join(f"cat '{t}' 2>/dev/null && echo 'LEAK {t}'" for t in tricks)
        out = ok(sandbox, script + "; cat /workspace/../workspace/marker && echo SEEN")
        assert out == f"in the workspace: {token}\nSEEN\n", out
        # No file anywhere in the sandbox's tree holds the token (/proc: our own argv).
        out = ok(sandbox, "find / -path /proc -prune -o -path /dev -prune -o -type f -print"
                          f" | xargs grep -l {token} 2>/dev/null; echo scanned")
        assert out == "/workspace/marker\nscanned\n", out  # the workspace's copy only
        # Whatever path leads "up" or through /proc ends at the sandbox root, never the host's.
        roots = ["/", "/proc/1/root", "/proc/self/root", "/proc/1/root/..", "/workspace/..",
                 "/workspace/../../../..", "/proc/1/cwd", "/proc/self/cwd/.."]
        script = "cd /workspace; " + "; ".join(
            f"echo \"$(stat -L -c %d:%i {r} 2>/dev/null || echo refused)\"" for r in roots)
        ids = dict(zip(roots, ok(sandbox, script).split(), strict=True))
        # The init's /proc/1/root and cwd are refused outright (ptrace rules: the agent
        # lacks capabilities the init holds); everything else is the sandbox's own root.
        assert ids["/"] != f"{host_root.st_dev}:{host_root.st_ino}"
        assert set(ids.values()) <= {ids["/"], "refused"}, ids
        assert ids["/proc/self/root"] == ids["/workspace/../../../.."] == ids["/"], ids
        listing = ok(sandbox, "ls -a / /proc/self/root/").split()
        for host_only in ("work", "home", "boot", "srv"):
            if Path("/", host_only).exists() and not (sandbox.sdir.upper / host_only).exists():
                assert host_only not in listing
    finally:
        for path in canaries:
            path.unlink(missing_ok=True)


@pytest.mark.rootonly
def test_root_s_sandbox_is_coops_id_range_and_the_workspace_stays_root_s(
        start: Start, workspace: Path) -> None:
    """Root's sandbox maps inside 0..65535 to coop's own range, never host 0 (with no host
    group either); the workspace, an idmapped mount, still shows root's files as inside
    root's and takes the agent's writes as root's, as a user's sandbox does for its user."""
    secret = workspace / "root-only"
    secret.write_text("root's\n")
    secret.chmod(0o600)
    sandbox = start("rootmap")
    out = ok(sandbox, "cat /proc/self/uid_map /proc/self/gid_map; grep Groups /proc/self/status")
    uid, gid = sandbox.idmap.host_uid(0), sandbox.idmap.host_gid(0)
    assert out.split() == ["0", str(uid), "65536", "0", str(gid), "65536", "Groups:"], out
    assert uid is not None and uid >= 1 << 30 and gid is not None and gid >= 1 << 30
    out = ok(sandbox, "stat -c %u:%g:%a /workspace/root-only; cat /workspace/root-only; "
                      "echo more >> /workspace/root-only; echo new > /workspace/made")
    assert out == "0:0:600\nroot's\n", out
    assert secret.read_text() == "root's\nmore\n"
    made = (workspace / "made").stat()
    assert (made.st_uid, made.st_gid) == (0, 0)  # root's, as a user's agent makes the user's
    assert (sandbox.sdir.upper.stat().st_uid, sandbox.sdir.upper.stat().st_gid) == (uid, gid)


@pytest.mark.rootonly
def test_root_s_workspace_maps_host_root_alone(start: Start, workspace: Path) -> None:
    """Root's workspace shows host root's files as the agent's and no other host owner's:
    another user's 0600 file is nobody's and unreadable inside, the agent can give no
    file to another host id, and a file capability it sets never reaches the host
    (stored for host root, it would make a binary any host user becomes root with)."""
    other = workspace / "other-user"
    other.write_text("not the agent's\n")
    os.chown(other, 1000, 1000)
    other.chmod(0o600)
    sandbox = start("rootalone", host_image=True)  # the host's setcap and python3 inside
    code, out = run(sandbox, "stat -c %u:%g /workspace/other-user; cat /workspace/other-user")
    assert code != 0 and "not the agent's" not in out, out
    assert out.startswith("65534:65534\n") and "Permission denied" in out, out
    code, out = run(sandbox, "touch /workspace/given && chown 5:5 /workspace/given")
    assert code != 0, out
    given = (workspace / "given").stat()
    assert (given.st_uid, given.st_gid) == (0, 0)
    if shutil.which("setcap"):
        setcap = "setcap cap_setuid+ep /workspace/capped"
    else:  # a v2 capability blob: effective, CAP_SETUID permitted
        blob = (0x02000001).to_bytes(4, "little") + (1 << 7).to_bytes(4, "little") + bytes(12)
        setcap = (f"python3 -c \"import os; os.setxattr('/workspace/capped', "
                  f"'security.capability', bytes.fromhex('{blob.hex()}'))\"")
    code, out = run(sandbox, f"cp /bin/true /workspace/capped && {setcap}")
    assert code != 0, out
    assert (workspace / "capped").is_file()
    with pytest.raises(OSError) as no_cap:
        os.getxattr(workspace / "capped", "security.capability")
    assert no_cap.value.errno == errno.ENODATA


@pytest.mark.rootonly
def test_root_s_owner_only_namespace_is_made_once_and_rechecked(start: Start,
                                                                 workspace: Path) -> None:
    """Root's starts in one process map their workspaces through one owner-only user
    namespace (a clone for each cost 2 ms of every start); a descriptor that was closed,
    its number now naming something else (as after a fork that dropped it), is never
    taken for that namespace."""
    fd = owner_userns(0, 0)
    assert owner_userns(0, 0) == fd
    assert os.readlink(f"/proc/self/fd/{fd}").startswith("user:[")
    os.close(fd)
    impostor = os.open(os.devnull, os.O_RDONLY)  # takes the freed number
    try:
        fresh = owner_userns(0, 0)
        assert fresh != impostor
        assert os.readlink(f"/proc/self/fd/{fresh}").startswith("user:[")
    finally:
        os.close(impostor)
    (workspace / "roots").write_text("root's\n")
    for name in ("once-a", "once-b"):
        sandbox = start(name)
        code, out = run(sandbox, f"stat -c %u:%g /workspace/roots && touch /workspace/{name}")
        assert (code, out) == (0, "0:0\n"), out
        made = (workspace / name).stat()
        assert (made.st_uid, made.st_gid) == (0, 0)


def _refused_start(env: CoopEnv, layer: Path, workspace: Path, name: str) -> str:
    """Start a sandbox that must be refused: the one-line reason; nothing of it is left."""
    sandbox = Sandbox(busybox_config(env, layer, workspace, name))
    try:
        with pytest.raises(SandboxError) as refused:
            sandbox.start()
        assert sandbox.state == "stopped" and not sandbox.alive
    finally:
        sandbox.stop(force=True)
    message = str(refused.value)
    assert "\n" not in message, message
    return message


def test_a_workspace_leading_outside_is_refused(coop_env: CoopEnv, busybox_layer: Path,
                                                workspace: Path, tmp_path: Path) -> None:
    """A workspace path that is not the real directory it was checked as (its last part a
    symlink to a directory elsewhere) is refused in one line, and so is a system
    directory given as the workspace itself: the supervisor checks the very directory it
    mounts, not only the daemon the path it resolved."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "marker").write_text("outside\n")
    (workspace / "sub").symlink_to(outside)
    message = _refused_start(coop_env, busybox_layer, workspace / "sub", "wsout")
    assert "refusing to bind the workspace" in message and str(outside) in message, message
    (workspace / "etc").symlink_to("/etc")
    message = _refused_start(coop_env, busybox_layer, workspace / "etc", "wsetc")
    assert "refusing to bind the workspace" in message and "/etc" in message, message
    message = _refused_start(coop_env, busybox_layer, Path("/etc"), "wsetc2")
    assert message.startswith("refusing to bind the workspace /etc: /etc is the host's own")


def test_a_workspace_swapped_after_its_check_is_refused(
        coop_env: CoopEnv, busybox_layer: Path, workspace: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent of another session on the same tree swaps the workspace for a symlink
    to a directory of its choice between the checks and the mount (here, deterministically,
    right after the supervisor's own checks): the start is refused, as the directory
    opened for the mount is not the one checked."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "marker").write_text("outside\n")
    checked = workspace / "sub"
    checked.mkdir()
    prepare = Sandbox._prepare

    def prepare_then_swap(self: Sandbox) -> Any:
        done = prepare(self)
        checked.rename(workspace / "sub-was")
        checked.symlink_to(outside)
        return done

    monkeypatch.setattr(Sandbox, "_prepare", prepare_then_swap)
    message = _refused_start(coop_env, busybox_layer, checked, "wsswap")
    assert message == (f"refusing to bind the workspace {checked}: it is now {outside} "
                       "(it changed after it was checked)"), message
    assert (outside / "marker").read_text() == "outside\n"


def test_host_image_shows_no_secret_of_etc(start: Start) -> None:
    """image = "host" binds the host's /etc, but over its secrets (shadow, gshadow, their
    backups, sudoers, sudoers.d, the ssh host keys) an empty read-only file or directory,
    whoever runs coop; and a file only host root may read stays unreadable (root's
    sandbox has none of host root's powers over it), nor can the agent write it."""
    private = Path("/etc") / f"coop-private-{uuid.uuid4().hex}"
    with planted_secrets() as planted:
        try:
            if IS_ROOT:
                private.write_text(planted.token + "\n")
                private.chmod(0o600)
            sandbox = start("etcsecrets", host_image=True)
            script, masked = mask_probe(planted)
            out = ok(sandbox, script)
            assert out.split() == masked, out
            assert ok(sandbox, "grep -c '^root:' /etc/passwd").strip() == "1"  # /etc is there
            if IS_ROOT:
                code, out = run(sandbox, f"cat {private}; echo x >> {private}")
                assert code != 0 and planted.token not in out, out
                assert "Permission denied" in out or "Read-only" in out, out
                assert private.read_text() == planted.token + "\n"
        finally:
            private.unlink(missing_ok=True)


@pytest.mark.rootonly
def test_a_host_root_file_in_a_pulled_image_s_layer_gives_no_power(
        start: Start, coop_env: CoopEnv, test_images: Any, tmp_path: Path) -> None:
    """A file of host root's that reaches a sandbox of a pulled image (here: one left in
    its built layer, as an older coop's layers are) can neither be read nor changed by
    the agent, who is inside root but not host root."""
    layers = _built(coop_env, test_images.busybox, tmp_path / "ws")
    token = f"c4n4ry-{uuid.uuid4().hex}"
    planted = layers[-1] / "etc" / "root-only"
    planted.write_text(token + "\n")
    os.chown(planted, 0, 0)
    planted.chmod(0o600)
    sandbox = start("pulled", layers=list(layers))
    assert ok(sandbox, "cat /etc/coop-test-image").strip()  # the pulled image's own file
    code, out = run(sandbox, "stat -c %u /etc/root-only; cat /etc/root-only; "
                             "echo x >> /etc/root-only; chmod 644 /etc/root-only; "
                             "chown 0 /etc/root-only; cat /etc/root-only")
    assert code != 0 and token not in out, out
    assert out.splitlines()[0] == "65534", out  # host root is nobody inside
    assert planted.read_text() == token + "\n" and planted.stat().st_mode & 0o777 == 0o600
    assert not (sandbox.sdir.upper / "etc" / "root-only").exists()


def _built(env: CoopEnv, image: str, workspace: Path) -> tuple[Path, ...]:
    """The layer dirs of ``image`` built by coop_build into the test's COOP_HOME."""
    workspace.mkdir()
    (workspace / "coop.toml").write_text(f'[base]\nimage = "{image}"\n[agent]\ncommand = "sh"\n')
    loaded = load_coopfile(workspace=workspace, global_path=workspace / "none.toml")
    paths = CoopPaths(env.coop_home)
    result = Builder(paths).build(loaded, workspace)
    return Store(paths).lower_dirs(result.record)


# --- 2. processes -----------------------------------------------------------------------


def test_host_processes_are_invisible_and_cannot_be_signalled(start: Start) -> None:
    helper = subprocess.Popen(["sleep", "1000"])
    try:
        sandbox = start()
        assert sandbox.init_pid is not None
        inside = {int(p) for p in ok(sandbox, "ls /proc").split() if p.isdigit()}
        # Only the sandbox's own processes: its init and this very shell (and ls).
        assert 1 in inside and len(inside) <= 3, inside
        host_pids = {helper.pid, os.getpid(), sandbox.init_pid}
        assert not host_pids & inside  # so "kill" below could not hit a sandbox process
        for pid in host_pids:
            code, out = run(sandbox, f"kill -0 {pid}")
            assert code != 0, f"kill -0 {pid} succeeded inside: {out}"
            code, out = run(sandbox, f"kill -9 {pid}")
            assert code != 0, out
        assert helper.poll() is None
        assert sandbox.alive
    finally:
        stop_pid(helper.pid, timeout=5.0)
        helper.wait()


# --- 3./4. network ----------------------------------------------------------------------


@pytest.mark.usefixtures("escape_topology")
def test_network_none_reaches_nothing(start: Start, coop_env: CoopEnv, tmp_path: Path,
                                      loopback_service: int) -> None:
    # Positive control: from the host, every target answers.
    for addr in (topo.INET_ADDR, topo.LAN_ADDR, topo.LINKLOCAL_ADDR):
        assert topo.reachable(addr), addr
    assert topo.reachable("127.0.0.1", loopback_service)
    sandbox = start("netnone", network=net("none", coop_env, "netnone", tmp_path))
    results = probe_tcp(sandbox, {
        "inet": (topo.INET_ADDR, 80), "lan": (topo.LAN_ADDR, 80),
        "linklocal": (topo.LINKLOCAL_ADDR, 80), "loopback": ("127.0.0.1", loopback_service),
        "byname": ("internet.coop.test", 80)})
    assert all(r.startswith("fail") for r in results.values()), results
    code, out = run(sandbox, "nslookup internet.coop.test")
    assert code != 0 and f"Address: {topo.INET_ADDR}" not in out, out


@pytest.mark.usefixtures("escape_topology")
def test_network_veth_reaches_the_internet_only(start: Start, coop_env: CoopEnv,
                                                tmp_path: Path, loopback_service: int,
                                                any_address_service: int) -> None:
    mode = net("veth", coop_env, "netveth", tmp_path)
    assert type(mode).__name__ == ("VethRootNetwork" if IS_ROOT else "VethUserNetwork")
    assert topo.reachable("127.0.0.1", loopback_service)
    assert topo.reachable(topo.LAN_HOST_END, any_address_service)  # host's own LAN address
    sandbox = start("netveth", network=mode)
    # A name resolved through the sandbox's resolv.conf (the session's forwarder, which
    # asks the test DNS server upstream).
    resolv = ok(sandbox, "cat /etc/resolv.conf")
    nameserver = resolv.split("nameserver")[1].split()[0]
    out = ok(sandbox, "nslookup internet.coop.test")
    assert f"Address: {topo.INET_ADDR}" in out, out
    assert nameserver in out
    code, out = run(sandbox, "nslookup nope.coop.test")
    assert code != 0, out
    targets = {
        "inet": (topo.INET_ADDR, 80), "byname": ("internet.coop.test", 80),
        "lan": (topo.LAN_ADDR, 80), "lanbyname": ("lan.coop.test", 80),
        "linklocal": (topo.LINKLOCAL_ADDR, 80),
        "loopback": ("127.0.0.1", loopback_service),
        "hostlan": (topo.LAN_HOST_END, any_address_service),
    }
    if IS_ROOT:  # the host end of the veth is the gateway: the host itself
        targets["gateway"] = (nameserver, any_address_service)
        targets["gatewaylo"] = (nameserver, loopback_service)
    results = probe_tcp(sandbox, targets)
    assert results.pop("inet") == "ok:internet"
    assert results.pop("byname") == "ok:internet"
    assert all(r.startswith("fail") for r in results.values()), results
    # The rules cannot be lifted from inside, and the capabilities for it are gone.
    for cmd in ("ip link set eth0 down", "ip route del default", "ip addr flush dev eth0",
                "ip link set lo down", "ip link add dummy0 type dummy",
                "sysctl -w net.ipv4.ip_forward=0"):
        code, out = run(sandbox, cmd)
        assert code != 0, f"{cmd}: {out}"
    effective = cap_eff(sandbox)
    for cap in (caps.CAP_NET_ADMIN, caps.CAP_SYS_ADMIN, caps.CAP_SYS_MODULE,
                caps.CAP_SYS_PTRACE):
        assert not effective & (1 << cap), hex(effective)
    if not IS_ROOT:
        # The rootless filter lives inside the sandbox's netns (nft output hook): a packet
        # socket on the tap device would bypass it, so CAP_NET_RAW must be gone too.
        assert not effective & (1 << caps.CAP_NET_RAW), hex(effective)
    # Everything still as it was.
    again = probe_tcp(sandbox, {"inet": (topo.INET_ADDR, 80), "lan": (topo.LAN_ADDR, 80)})
    assert again["inet"] == "ok:internet" and again["lan"].startswith("fail"), again


RAW_SYN = r"""
import fcntl, os, socket, struct, subprocess, sys, time
def csum(b):
    b += b"\0" * (len(b) % 2)
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF
target = socket.inet_aton(sys.argv[1])
try:
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
except PermissionError:
    sys.exit(print("verdict: no packet socket"))
socket.create_connection((sys.argv[2], 80), timeout=3).close()  # ARP for the gateway
gw = bytes.fromhex(open("/proc/net/arp").read().splitlines()[1].split()[3].replace(":", ""))
me = fcntl.ioctl(raw.fileno(), 0x8927, struct.pack("256s", b"eth0"))[18:24]
addr = subprocess.run(["ip", "-4", "-o", "addr", "show", "eth0"], capture_output=True,
                      text=True, check=True).stdout.split()[3].split("/")[0]
src, sport = socket.inet_aton(addr), 40000 + os.getpid() % 20000
tcp = struct.pack("!HHIIBBHHH", sport, 80, 1000, 0, 5 << 4, 0x02, 64240, 0, 0)
tcp = tcp[:16] + struct.pack("!H", csum(src + target + struct.pack("!BBH", 0, 6, 20) + tcp))
tcp += struct.pack("!H", 0)
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, src, target)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
raw.bind(("eth0", 0))
raw.send(gw + me + b"\x08\x00" + ip + tcp)
end = time.monotonic() + 3
while (left := end - time.monotonic()) > 0:
    raw.settimeout(left)
    try:
        frame = raw.recv(2048)
    except TimeoutError:
        break
    proto, peer = frame[23], frame[26:30]
    if proto == 6 and peer == target and struct.unpack("!H", frame[36:38])[0] == sport:
        sys.exit(print(f"verdict: ANSWERED flags=0x{frame[47]:02x}"))
    if proto == 1 and frame[34] == 3:
        sys.exit(print(f"verdict: rejected icmp code {frame[35]}"))
print("verdict: no answer")
"""


@pytest.mark.usefixtures("escape_topology")
def test_veth_filter_survives_hand_made_packets(start: Start, coop_env: CoopEnv,
                                               tmp_path: Path, workspace: Path) -> None:
    """A raw SYN to the LAN host, built by hand on a packet socket (image = "host": the
    host's Python inside), gets no answer: the agent either cannot open a packet socket
    (rootless: the filter is inside its netns) or the host's filter refuses it."""
    (workspace / "rawsyn.py").write_text(RAW_SYN)
    sandbox = start("rawnet", layers=[], host_image=True,
                    network=net("veth", coop_env, "rawnet", tmp_path))
    out = ok(sandbox, f"/usr/bin/python3 /workspace/rawsyn.py {topo.LAN_ADDR} {topo.INET_ADDR}")
    verdict = out.strip().splitlines()[-1]
    if IS_ROOT:
        assert verdict in ("verdict: rejected icmp code 13", "verdict: no answer"), out
    else:
        assert verdict == "verdict: no packet socket", out


def test_network_modes_declare_whether_raw_sockets_are_safe(coop_env: CoopEnv) -> None:
    """CAP_NET_RAW stays only where a packet socket cannot get around the filter."""
    paths = CoopPaths(coop_env.coop_home)
    for mode, raw_ok in (("none", True), ("host", True)):
        assert child_capabilities(network_for(mode, session="m", paths=paths)) == (
            caps.KEEP if raw_ok else caps.KEEP - {caps.CAP_NET_RAW})
    none = network_for("none", session="m", paths=paths)
    assert child_capabilities(none, host_root_files=True) == caps.KEEP - {caps.CAP_SETFCAP}
    rootless = network_for("veth", session="m", paths=paths, rootless=True)
    assert caps.CAP_NET_RAW not in child_capabilities(rootless)
    if IS_ROOT:
        rooted = network_for("veth", session="m", paths=paths, rootless=False)
        assert caps.CAP_NET_RAW in child_capabilities(rooted)

    class Filtering:
        """A mode that filters inside the sandbox's netns, as rootless veth does."""

        unshare_net = True
        net_raw_safe = False

        def resolv_conf(self) -> str:
            return ""

        def attach(self, ns_pid: int) -> None: ...

        def close(self) -> None: ...

    assert caps.CAP_NET_RAW not in child_capabilities(Filtering())
    assert caps.CAP_SYS_ADMIN not in child_capabilities(Filtering())

    class Undeclared:  # says nothing about raw sockets: not a network mode at all
        unshare_net = True

        def resolv_conf(self) -> str:
            return ""

        def attach(self, ns_pid: int) -> None: ...

        def close(self) -> None: ...

    assert isinstance(Filtering(), NetworkMode)
    assert not isinstance(Undeclared(), NetworkMode)


# --- 5. writes to / ---------------------------------------------------------------------


def tree_digest(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root``: type, mode, owner, size, mtime, link target, content."""
    found: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            path = Path(dirpath, name) if name else Path(dirpath)
            st = path.lstat()
            extra: Any = None
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                                 st.st_mtime_ns, st.st_ino, extra)
    return found


def test_writes_to_root_land_in_the_upper_only(start: Start, coop_env: CoopEnv,
                                               tmp_path: Path) -> None:
    layer = make_busybox_rootfs(tmp_path / "layer")  # private: hashed before and after
    before = tree_digest(layer)
    sandbox = start("writer", layers=[layer])
    ok(sandbox, "echo owned > /etc/owned; rm /bin/sh; "
                "printf '#!/bin/busybox sh\\necho replaced\\n' > /bin/sh; chmod 755 /bin/sh; "
                "chmod 700 /bin/busybox; echo x >> /etc/passwd; chmod 777 /root; "
                "rm -rf /usr/sbin; ln -s /etc/owned /bin/evil; mkdir /opt; "
                "echo via-proc > /proc/self/root/etc/owned2; touch /workspace/../etc/owned3")
    assert ok(sandbox, "/bin/sh").strip() == "replaced"  # the agent's view did change
    upper = sandbox.sdir.upper
    assert (upper / "etc" / "owned").read_text() == "owned\n"
    assert (upper / "etc" / "owned2").read_text() == "via-proc\n"
    assert (upper / "etc" / "owned3").exists()
    assert (upper / "bin" / "sh").read_text().endswith("echo replaced\n")
    assert stat.S_IMODE((upper / "bin" / "busybox").stat().st_mode) == 0o700
    assert os.readlink(upper / "bin" / "evil") == "/etc/owned"
    assert (upper / "opt").is_dir()
    assert tree_digest(layer) == before  # byte for byte, metadata included
    sandbox.stop()
    assert tree_digest(layer) == before
    assert not upper.exists()


# --- 6. setuid ---------------------------------------------------------------------------


def _host_ids(host_pid: int) -> tuple[list[int], list[int]]:
    status = Path(f"/proc/{host_pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return [int(x) for x in fields["Uid"].split()], [int(x) for x in fields["Gid"].split()]


def _mapped(value: int, idmap_lines: Any) -> bool:
    return any(outer <= value < outer + count for _inner, outer, count in idmap_lines)


def test_setuid_binary_gains_nothing_on_the_host(start: Start) -> None:
    sandbox = start("setuid")
    ok(sandbox, "cp /bin/busybox /usr/local/bin/busybox-suid 2>/dev/null || "
                "{ mkdir -p /usr/local/bin && cp /bin/busybox /usr/local/bin/busybox-suid; }; "
                "chown 0:0 /usr/local/bin/busybox-suid && chmod 4755 /usr/local/bin/busybox-suid")
    sdir = sandbox.sdir
    st = (sdir.upper / "usr" / "local" / "bin" / "busybox-suid").lstat()
    assert st.st_mode & stat.S_ISUID
    # Inside root is the invoking user, or for root coop's own id range: never host root.
    assert st.st_uid == sandbox.idmap.owner[0] != 0
    if IS_ROOT:
        # A setuid file of coop's range, so no other user may reach it: the session dir
        # is root's and 0700 (with the whole upper below it).
        sd = sdir.path.stat()
        assert sd.st_uid == 0 and stat.S_IMODE(sd.st_mode) & 0o077 == 0, oct(sd.st_mode)
    # Run it: from an unprivileged uid inside when one is mapped, else as root inside.
    # busybox drops a setuid euid for most applets (id, sh, sleep) but keeps it for ping,
    # which then runs with euid 0 inside: exactly the privilege a setuid binary can get.
    # (busybox su as root inside needs no password; "daemon" is uid 1 in the layer.)
    suid = "/usr/local/bin/busybox-suid"
    keeper = f"exec {suid} ping -q 127.0.0.1"  # the sandbox's own loopback (mode none)
    if sandbox.idmap.full:
        assert ok(sandbox, f"su -s /bin/sh daemon -c 'id -u; {suid} id -u'").split() == [
            "1", "1"]
        argv = ["su", "-s", "/bin/sh", "daemon", "-c", keeper]
        inside_uids = ["1", "0", "0", "0"]
    else:
        assert ok(sandbox, f"{suid} id -u").strip() == "0"
        argv = ["sh", "-c", keeper]
        inside_uids = ["0", "0", "0", "0"]
    proc = sandbox.spawn(argv)
    assert proc.host_pid is not None
    try:
        wait_for(lambda: Path(f"/proc/{proc.host_pid}/cmdline").read_bytes().startswith(
            suid.encode()), TIMEOUT, "the setuid binary to run")
        seen = ok(sandbox, f"grep Uid /proc/{proc.pid}/status").split()[1:]
        assert seen == inside_uids, seen  # the setuid bit worked inside
        uids, gids = _host_ids(proc.host_pid)
        # ...and on the host that euid 0 is the invoking user (or a sub-uid), or for root
        # coop's range: never root, whoever started coop.
        assert uids[1] == sandbox.idmap.owner[0]
        assert all(_mapped(u, sandbox.idmap.uid_map) for u in uids), uids
        assert all(_mapped(g, sandbox.idmap.gid_map) for g in gids), gids
        assert 0 not in uids and 0 not in gids, (uids, gids)
        effective = caps.status_mask(Path(f"/proc/{proc.host_pid}/status").read_text())
        assert not effective & (1 << caps.CAP_SYS_ADMIN)
    finally:
        sandbox.signal(proc.pid, signal.SIGKILL)
        sandbox.wait(proc.pid, TIMEOUT)


# --- 7. persist ----------------------------------------------------------------------------


def test_persist_survives_a_restart_the_upper_does_not(start: Start) -> None:
    first = start("keeper")
    ok(first, "echo kept > /root/.cache/note; echo gone > /root/scratch; echo gone > /etc/x")
    upper = first.sdir.upper
    first.stop()
    assert not upper.exists()
    second = start("keeper")
    assert ok(second, "cat /root/.cache/note; ls /root/scratch /etc/x 2>&1 | wc -l") == (
        "kept\n2\n")
    assert ok(second, "test -e /root/scratch || test -e /etc/x || echo fresh") == "fresh\n"


# --- 8. workspace ------------------------------------------------------------------------


def test_workspace_edits_cross_at_once_both_ways(start: Start, workspace: Path) -> None:
    """A process still running inside sees the host's edit and its own edit is on the host
    immediately: no copy, no sync at exit or stop."""
    sandbox = start("shared")
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    script = ("read a; cat /workspace/from-host > /workspace/echo; echo inside > "
              "/workspace/from-inside; echo step1; read b; cat /workspace/from-host; echo done")
    proc = sandbox.spawn(["sh", "-c", script], stdio=(to_r, from_w, from_w))
    os.close(to_r)
    os.close(from_w)
    try:
        (workspace / "from-host").write_text("host-1\n")
        os.write(to_w, b"go\n")
        line = b""
        while not line.endswith(b"step1\n"):
            assert select.select([from_r], [], [], TIMEOUT)[0], line
            chunk = os.read(from_r, 100)
            assert chunk, line
            line += chunk
        assert sandbox.poll_exit(proc.pid) is None  # still running inside
        assert (workspace / "echo").read_text() == "host-1\n"
        assert (workspace / "from-inside").read_text() == "inside\n"
        (workspace / "from-host").write_text("host-2\n")
        os.write(to_w, b"go\n")
        os.close(to_w)
        to_w = -1
        assert read_until_eof(from_r) == "host-2\ndone\n"
        assert sandbox.wait(proc.pid, TIMEOUT).returncode == 0
    finally:
        if to_w >= 0:
            os.close(to_w)
        os.close(from_r)


# --- 9. races --------------------------------------------------------------------------


RACE_ROUNDS = 24
RACE_BUDGET = 15.0


def test_spawns_racing_start_and_stop_never_run_on_the_host(
        coop_env: CoopEnv, busybox_layer: Path, workspace: Path) -> None:
    host_mnt = os.readlink("/proc/self/ns/mnt")
    host_pid_ns = os.readlink("/proc/self/ns/pid")
    outcomes: list[str] = []
    lock = threading.Lock()
    began = time.monotonic()
    rounds = 0
    while rounds < RACE_ROUNDS and time.monotonic() - began < RACE_BUDGET:
        rounds += 1
        sandbox = Sandbox(busybox_config(coop_env, busybox_layer, workspace, "racer",
                                         persist=[]))
        done = threading.Event()

        def fire(box: Sandbox = sandbox, stop_flag: threading.Event = done) -> None:
            while not stop_flag.is_set():
                outcome = _one_racing_spawn(box, host_mnt, host_pid_ns)
                with lock:
                    outcomes.append(outcome)

        threads = [threading.Thread(target=fire) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            first = len(outcomes)
            sandbox.start()
            wait_for(lambda f=first: "inside" in outcomes[f:], TIMEOUT, "a spawn to run inside")
            sandbox.stop(grace=0.2)
            mark = len(outcomes)
            wait_for(lambda m=mark: len(outcomes) > m + 1, TIMEOUT, "spawns after stop")
        finally:
            done.set()
            for thread in threads:
                thread.join(TIMEOUT)
            with contextlib.suppress(SandboxError):
                sandbox.stop(force=True)
        assert not any(t.is_alive() for t in threads), "a test thread did not stop"
    assert rounds >= 5
    print(f"{rounds} rounds, outcomes: "
          + ", ".join(f"{o}: {outcomes.count(o)}" for o in sorted(set(outcomes))))
    bad = [o for o in outcomes if o not in ("inside", "killed inside")
           and not o.startswith("refused")]
    assert not bad, bad[:5]
    assert outcomes.count("inside") >= rounds
    assert any(o.startswith("refused") for o in outcomes)


def _one_racing_spawn(sandbox: Sandbox, host_mnt: str, host_pid_ns: str) -> str:
    """One spawn printing its namespaces: "inside", "killed inside" (teardown got it
    first), "refused" (SandboxError), or what went wrong."""
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        try:
            proc = sandbox.spawn(
                ["/bin/busybox", "sh", "-c",
                 "readlink /proc/self/ns/mnt; readlink /proc/self/ns/pid; hostname"],
                stdio=(null, w, w), timeout=TIMEOUT)
        except SandboxError as exc:
            return f"refused {exc.code}"
        finally:
            os.close(w)
            os.close(null)
        out = read_until_eof(r).split()
    finally:
        os.close(r)
    expected = ("mnt:", "pid:", "racer")
    pairs = zip(out, expected, strict=False)
    if len(out) > 3 or any(not got.startswith(want) for got, want in pairs):
        return f"odd output {out}"
    if host_mnt in out or host_pid_ns in out:
        return f"ON THE HOST: {out}"
    if len(out) == 3:
        return "inside"
    if out:  # cut short by the teardown, but what it printed is the sandbox's
        return "killed inside"
    # No output at all: it must have been killed by the teardown, never run elsewhere.
    try:
        status = sandbox.wait(proc.pid, TIMEOUT)
    except SandboxError:
        return "killed inside"
    return "killed inside" if status.signal else f"silent exit {status}"


# --- 6. coop's own sockets -----------------------------------------------------------------

# Speaks the handshake to a coop socket: "answered" when the peer replies, "refused" when it
# hangs up. Run by the host's python3, inside a sandbox of ``image = "host"`` and outside.
HANDSHAKE = """
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
body = json.dumps({"version": 1}).encode()
try:
    s.sendall(struct.pack(">I", len(body)) + body)
    print("answered" if s.recv(65536) else "refused")
except (BrokenPipeError, ConnectionResetError):  # hung up on before or while it spoke
    print("refused")
"""


def test_the_daemon_refuses_a_process_inside_a_sandbox(start: Start, workspace: Path,
                                                        coop_env: CoopEnv) -> None:
    """The workspace holds the daemon's socket (a user who runs coop in the directory that
    holds COOP_HOME): a process inside reaches the socket file, passes the uid check (its
    uid 0 is the user), and is still refused: it is not in our user or PID namespace."""
    home = workspace / ".coop"
    sock = home / "sock"
    env = {**os.environ, "COOP_HOME": str(home), "COOP_DAEMON_IDLE_SECONDS": "60"}
    daemon = subprocess.Popen([sys.executable, "-m", "coop_run.daemon.main", "--socket",
                               str(sock)], env=env, stdin=subprocess.DEVNULL)
    try:
        wait_for(sock.exists, TIMEOUT, "the daemon's socket")
        outside = subprocess.run(["/usr/bin/python3", "-c", HANDSHAKE, str(sock)],
                                 capture_output=True, text=True, timeout=30, check=True)
        assert outside.stdout.strip() == "answered"  # positive control: the user's own CLI
        sandbox = start("sockets", host_image=True)
        inside = sandbox_ok(sandbox, f"/usr/bin/python3 -c '{HANDSHAKE}' "
                                     "/workspace/.coop/sock")
        assert inside.strip() == "refused"
    finally:
        stop_pid(daemon.pid, timeout=10.0)
        daemon.wait()


def test_coop_home_inside_the_workspace_is_hidden(start: Start, workspace: Path) -> None:
    """A workspace that holds COOP_HOME (coop run in the home directory) shows it inside as
    an empty read-only directory: no socket, no other session, nothing to write."""
    coop_home = workspace / ".coop"
    (coop_home / "sessions" / "other").mkdir(parents=True)
    (coop_home / "secret").write_text("other sessions' records\n")
    sandbox = start("hidden", hide=[coop_home])
    assert sandbox_ok(sandbox, "ls -A /workspace/.coop; echo end") == "end\n"
    code, _out = sandbox_run(sandbox, "touch /workspace/.coop/x")
    assert code != 0
    assert sandbox_ok(sandbox, "echo visible > /workspace/file; cat /workspace/file") == \
        "visible\n"  # the rest of the workspace is as before
    assert sorted(p.name for p in coop_home.iterdir()) == ["secret", "sessions"]



# Connects to the Unix socket argv[1] and prints what it says.
UNIX_CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
print(s.recv(64).decode())
"""


def test_coop_home_inside_a_persist_directory_is_hidden(start: Start,
                                                        coop_env: CoopEnv) -> None:
    """The same cover where a persist bind (``~/.cache`` inside) would show a hidden
    directory: it is empty and read-only inside, its socket unreachable."""
    persist = CoopPaths(coop_env.coop_home).sessions / "pers" / "persist" / ".cache"
    hidden = persist / "coop"
    hidden.mkdir(parents=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    directory = os.open(hidden, os.O_PATH)
    try:  # through the descriptor: the path itself is longer than a socket address may be
        listener.bind(f"/proc/self/fd/{directory}/sock")
    finally:
        os.close(directory)
    listener.listen(1)
    with _answering(listener, b"coop-home"):
        sandbox = start("pers", hide=[hidden], host_image=True)
        assert sandbox_ok(sandbox, "ls -A /root/.cache/coop; echo end") == "end\n"
        code, out = sandbox_run(sandbox, f"/usr/bin/python3 -c '{UNIX_CONNECT}' "
                                         "/root/.cache/coop/sock")
        assert code != 0 and "coop-home" not in out, out
        assert sandbox_run(sandbox, "touch /root/.cache/coop/x")[0] != 0
        assert sandbox_ok(sandbox, "echo kept > /root/.cache/f; cat /root/.cache/f") == "kept\n"
    assert sorted(p.name for p in hidden.iterdir()) == ["sock"]


def test_a_supervisor_refuses_a_process_inside_its_own_session(
        coop_env: CoopEnv, busybox_layer: Path, tmp_path: Path) -> None:
    """A session told to hide nothing, whose workspace holds COOP_HOME: its own agent
    reaches its supervisor's socket file, passes the uid check, and is still refused (the
    supervisor hands it no shell of another session, no kill, no info)."""
    sandbox = busybox_config(coop_env, busybox_layer, tmp_path, "sup", host_image=True)
    handle = start_supervisor(SupervisorConfig(
        sandbox=sandbox, agent=("sh",), log_file=coop_env.coop_home / "logs" / "sup.log"))
    try:
        outside = subprocess.run(["/usr/bin/python3", "-c", HANDSHAKE,
                                  str(handle.socket_path)],
                                 capture_output=True, text=True, timeout=30, check=True)
        assert outside.stdout.strip() == "answered"  # positive control: the user's own CLI
        inside_path = f"/workspace/{handle.socket_path.relative_to(tmp_path)}"
        shell = Stream.open(handle.socket_path, "shell", cols=200, rows=24,
                            command=f"/usr/bin/python3 -c '{HANDSHAKE}' {inside_path}")
        try:
            assert shell.wait_event("pty_exited")["code"] == 0, bytes(shell.output)
            assert b"refused" in shell.output and b"answered" not in shell.output
        finally:
            shell.close()
    finally:
        with contextlib.suppress(OSError, AssertionError):
            supervisor_request(handle.socket_path, {"cmd": "kill", "force": True})
        stop_pid(handle.pid, timeout=10.0)

# Connects to the abstract socket argv[1]: exit 0 and "connected" if it answers.
ABSTRACT_CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(b"\\0" + sys.argv[1].encode())
print(s.recv(64).decode())
"""


@pytest.fixture
def abstract_socket() -> Iterator[str]:
    """A listener on an abstract Unix socket of the host's network namespace (where X11's
    and D-Bus's live), answering "host-abstract"."""
    name = f"coop-test-{uuid.uuid4().hex}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(b"\0" + name.encode())
    srv.listen(4)
    with _answering(srv, b"host-abstract"):
        yield name


@pytest.mark.usefixtures("escape_topology")
def test_only_host_network_shares_the_hosts_abstract_sockets(
        start: Start, coop_env: CoopEnv, tmp_path: Path, abstract_socket: str) -> None:
    """Abstract Unix sockets belong to a network namespace: ``none`` and ``veth`` have their
    own, ``host`` shares the host's (as bwrap's --share-net does), and says so."""
    script = f"/usr/bin/python3 -c '{ABSTRACT_CONNECT}' {abstract_socket}"
    for mode in ("none", "veth"):
        name = f"abs{mode}"
        sandbox = start(name, host_image=True, network=net(mode, coop_env, name, tmp_path))
        code, out = sandbox_run(sandbox, script)
        assert code != 0 and "host-abstract" not in out, (mode, out)
    shared = start("abshost", host_image=True, network=net("host", coop_env, "abshost",
                                                           tmp_path))
    assert sandbox_ok(shared, script).strip() == "host-abstract"  # the positive control
