"""coop-init, the sandbox's PID 1 after its root is built (csrc/coop-init.c), for real:
what it is inside, what it holds, and how it answers requests that are not right.

Real sandboxes on the static-busybox layer, as root and as the test user; the control
socket is driven directly, as the supervisor would, with records built by hand.
"""

from __future__ import annotations

import ast
import fcntl
import math
import os
import re
import select
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from busybox_sandbox import busybox_config, home_workspace, running_sandbox
from sandbox_helpers import ok, read_until_eof, run

from coop_build import rootpath
from coop_build.idmap import choose_idmap
from coop_run.errors import SandboxError
from coop_run.sandbox import caps, initexe, initproto
from coop_run.sandbox.clone import EXEC_FAILED, prepare_init
from coop_run.sandbox.host import Sandbox, child_capabilities
from coop_run.sandbox.keptfd import KeptFd
from support.bench import CoopEnv
from support.procs import children
from support.require import needs
from support.rootfs import busybox_available

pytestmark = needs(busybox_available(), "needs busybox-static")

TIMEOUT = 10.0
REPO = Path(__file__).resolve().parents[3]
CSRC = REPO / "packages" / "coop-run" / "csrc"
INIT_OWN = {caps.CAP_SYS_ADMIN, caps.CAP_KILL, caps.CAP_DAC_OVERRIDE, caps.CAP_DAC_READ_SEARCH}


@pytest.fixture
def sandbox(coop_env: CoopEnv, busybox_layer: Path) -> Iterator[Sandbox]:
    config = busybox_config(coop_env, busybox_layer, home_workspace(coop_env), "proj")
    with running_sandbox(config) as box:
        yield box


def test_pid_1_is_coop_init_holding_only_what_it_uses(sandbox: Sandbox) -> None:
    assert sandbox.init_pid is not None
    host_status = Path(f"/proc/{sandbox.init_pid}/status").read_text()
    assert "Name:\tcoop-init" in host_status
    assert caps.status_mask(host_status, "CapEff") == caps.mask(frozenset(INIT_OWN))
    assert caps.status_mask(host_status, "CapInh") == 0
    inside = ok(sandbox, "cat /proc/1/comm; cat /proc/self/status")
    assert inside.splitlines()[0] == "coop-init"
    # What a process inside may hold is the bounding set coop-init left: the mode's set,
    # less CAP_SETFCAP in root's sandbox (its workspace writes as host root).
    root_s = sandbox.idmap.owner != (os.geteuid(), os.getegid())
    expected = child_capabilities(sandbox.network, host_root_files=root_s)
    assert caps.status_mask(inside, "CapBnd") == caps.mask(expected)
    assert (caps.CAP_SETFCAP in expected) != root_s
    assert not caps.status_mask(inside, "CapBnd") & (1 << caps.CAP_SYS_ADMIN)


def test_processes_inside_cannot_look_into_or_trace_pid_1(sandbox: Sandbox) -> None:
    for probe in ("cat /proc/1/environ", "readlink /proc/1/fd/0", "cat /proc/1/fd/0",
                  "readlink /proc/1/exe", "cat /proc/1/mem"):
        code, out = run(sandbox, f"{probe} >/dev/null")
        assert code != 0, (probe, out)
    # The PID 1 of a sandbox is the sealed in-memory copy, never the installed file.
    host_exe = os.readlink(f"/proc/{sandbox.init_pid}/exe")
    assert host_exe.startswith("/memfd:coop-init"), host_exe


def _record(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _replies(sock: socket.socket, count: int) -> list[dict[str, object]]:
    """The next ``count`` replies (exits of other processes skipped)."""
    got: list[dict[str, object]] = []
    while len(got) < count:
        assert select.select([sock], [], [], TIMEOUT)[0], got
        received = initproto.recv(sock)
        assert received is not None, got
        for fd in received.fds:
            os.close(fd)
        if received.message["op"] != "exited":
            got.append(received.message)
    return got


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        (b"spawn\0id=5\0", (5, "a program")),
        (b"spawn\0id=6\0argv=true\0cols=0\0", (6, "bad field 'cols'")),
        (b"spawn\0id=7\0argv=true\0env=NOEQUALS\0", (7, "bad field 'env'")),
        (b"spawn\0id=8\0argv=true\0stdio=3\0", (8, "0 descriptors sent, 3 declared")),
        (b"spawn\0id=9\0argv=true\0cwd=relative\0", (9, "bad field 'cwd'")),
        (b"frob\0id=10\0", (10, "unknown request op 'frob'")),
        (b"signal\0id=11\0pid=1\0signo=9\0", (11, "cannot signal the init")),
        (b"signal\0id=12\0pid=99999\0signo=0\0", (12, "kill 99999")),
        (b"signal\0id=15\0pid=0\0signo=15\0", (15, "bad field 'pid'")),
        (b"signal\0id=16\0pid=4\0signo=99\0", (16, "bad field 'signo'")),
        (b"shutdown\0id=13\0grace=-1\0", (13, "bad field 'grace'")),
        (b"ok\0", (None, "'id' is missing")),
        (b"spawn\0id=x\0", (None, "'id' must be an integer")),
        (b"spawn\0id=14\0argv=true", (None, "does not end its last item")),
        (b"spawn\0id=17\0argv=true\0pty=2\0", (17, "bad field 'pty'")),
        (b"spawn\0id=18\0argv=true\0cwd=/a\0cwd=/b\0", (18, "bad field 'cwd'")),
        (b"spawn\0id=19\0argv=true\0cwd=/nowhere\0",
         (19, "cannot change to /nowhere: No such file or directory")),
        (b"spawn\0id=21\0argv=/\0cwd=/tmp\0", (21, "cannot run /: Permission denied")),
    ],
)
def test_a_bad_request_gets_an_error_and_the_init_serves_on(
        sandbox: Sandbox, body: bytes, answer: tuple[int | None, str]) -> None:
    sock = sandbox._channel.sock  # the supervisor's end; nothing else reads it in this test
    assert sock is not None
    sock.send(_record(body))
    [reply] = _replies(sock, 1)
    assert reply["op"] == "error"
    assert reply["id"] == answer[0], reply
    assert answer[1] in str(reply["message"]), reply
    # The same init still serves, and ids keep matching their requests.
    sock.send(initproto.encode({"op": "spawn", "id": 99, "argv": ["true"]}))
    [spawned] = _replies(sock, 1)
    assert (spawned["op"], spawned["id"]) == ("spawned", 99)


def test_a_record_whose_length_lies_is_refused(sandbox: Sandbox) -> None:
    sock = sandbox._channel.sock
    assert sock is not None
    sock.send(struct.pack(">I", 100) + b"ok\0id=1\0")
    [reply] = _replies(sock, 1)
    assert reply["op"] == "error" and "not exactly one message" in str(reply["message"])
    assert ok(sandbox, "echo still").strip() == "still"


def test_a_message_quoting_a_huge_request_is_cut_to_its_limit(sandbox: Sandbox) -> None:
    sock = sandbox._channel.sock
    assert sock is not None
    sock.send(_record(b"x" * 100_000 + b"\0id=20\0"))
    [reply] = _replies(sock, 1)
    message = str(reply["message"])
    assert reply["id"] == 20 and message.startswith("unknown request op 'xxx"), reply
    assert len(message.encode()) == _c_defines()["TEXT_MAX"] - 1
    assert ok(sandbox, "echo still").strip() == "still"


def test_pid_1_stays_in_its_root_while_a_spawn_enters_its_cwd(sandbox: Sandbox) -> None:
    """Only the child being started changes directory; one that cannot is reported as
    such, and leaves no process behind."""
    init = sandbox.init_pid
    assert init is not None
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        proc = sandbox.spawn(["sh", "-c", "pwd; exec cat"], cwd="/tmp",
                             stdio=(in_r, out_w, out_w))
        os.close(out_w)
        out_w = -1
        assert select.select([out_r], [], [], TIMEOUT)[0]
        assert os.read(out_r, 100) == b"/tmp\n"
        assert proc.host_pid is not None
        inside_tmp = os.stat(f"/proc/{init}/root/tmp")
        child_cwd = os.stat(f"/proc/{proc.host_pid}/cwd")
        assert (child_cwd.st_dev, child_cwd.st_ino) == (inside_tmp.st_dev, inside_tmp.st_ino)
        init_cwd, init_root = os.stat(f"/proc/{init}/cwd"), os.stat(f"/proc/{init}/root")
        assert (init_cwd.st_dev, init_cwd.st_ino) == (init_root.st_dev, init_root.st_ino)
        os.close(in_w)
        in_w = -1
        assert read_until_eof(out_r) == ""
    finally:
        for fd in (in_r, in_w, out_r, out_w):
            if fd >= 0:
                os.close(fd)
    assert sandbox.wait(proc.pid, TIMEOUT).returncode == 0
    with pytest.raises(SandboxError, match="cannot change to /nowhere: No such file"):
        sandbox.spawn(["true"], cwd="/nowhere")
    assert children(init) == []  # the child that could not enter /nowhere is reaped
    init_cwd = os.stat(f"/proc/{init}/cwd")
    assert (init_cwd.st_dev, init_cwd.st_ino) == (init_root.st_dev, init_root.st_ino)


def _setup_failure(body: bytes) -> str:
    """What a fresh init answers (as "failed") to ``body`` as its first set-up record."""
    prepared = prepare_init(choose_idmap(), unshare_net=True)
    try:
        prepared.sock.send(_record(body))
        assert select.select([prepared.sock], [], [], TIMEOUT)[0]
        received = initproto.recv(prepared.sock)
        assert received is not None
        assert received.message["op"] == "failed", received.message
        return str(received.message["message"])
    finally:
        prepared.discard()


@pytest.mark.parametrize(("body", "complaint"), [
    (b"setup\0hostname=x\0colour=red\0", "setup: unknown field 'colour'"),
    (b"pivot\0now=1\0", "pivot: unknown field 'now'"),
    (b"mount\0target=/\0", "unknown set-up op 'mount'"),
    (b"mapped\0", "unknown set-up op 'mapped'"),  # the cloned child's, never coop-init's
    (b"spawn\0id=1\0argv=true\0", "unknown set-up op 'spawn'"),
    (b"bind\0source=/s\0target=/t\0file=2\0", "bind: 'file' must be 0 or 1"),
    (b"bind\0source=/s\0target=/t\0readonly=\0", "bind: 'readonly' must be 0 or 1"),
    (b"setup\0hostname=a\0hostname=b\0", "setup: 'hostname' given twice"),
    (b"setup\0hostname\0", "setup: item without '='"),
    (b"setup\0child_caps=0\0", "setup: 'hostname' is missing"),
])
def test_a_set_up_record_the_init_does_not_know_fails_its_start(
        body: bytes, complaint: str) -> None:
    """A field renamed on one side must fail the start, never read as absent; so must a
    value of the wrong form, or one given twice."""
    assert complaint in _setup_failure(body)


def test_a_set_up_failure_quoting_a_huge_record_is_cut_to_its_limit() -> None:
    message = _setup_failure(b"m" * 100_000 + b"\0")
    assert message.startswith("sandbox setup failed: unknown set-up op 'mmm"), message[:80]
    assert len(message.encode()) == _c_defines()["TEXT_MAX"] - 1


# --- the schema both sides speak -------------------------------------------------------


def _c_code() -> str:
    """coop-init.c without its comments."""
    return re.sub(r"/\*.*?\*/", " ", (CSRC / "coop-init.c").read_text(), flags=re.S)


def test_the_c_header_is_what_initproto_generates() -> None:
    header = CSRC / initproto.C_HEADER
    assert header.read_text() == initproto.c_header(), (
        f"{header.name} is stale: run scripts/gen-initproto-header, then uv sync")


def test_the_c_handles_every_op_and_field_of_the_schema_by_the_header_alone() -> None:
    """A field added on the Python side is one the C reads or writes; none is spelled in
    the C itself (a renamed name would then go unnoticed)."""
    code = _c_code()
    used = set(re.findall(r"\b(?:OP|F)_[A-Z_]+\b", code))
    ops = [op for op in initproto.SCHEMAS if op != "mapped"]  # mapped: before the exec
    assert {name for name in used if name.startswith("OP_")} == {f"OP_{op.upper()}"
                                                                 for op in ops}
    table = re.search(r"\brequests\[\] = \{(.*?)\};", code, re.S)
    assert table is not None
    requests = [op.lower() for op in re.findall(r"\{OP_(\w+),", table[1])]
    assert requests == ["spawn", "signal", "shutdown"]
    generated = {f"F_{op.upper()}_{key.upper()}": (op, key)
                 for op, fields in initproto.SCHEMAS.items() for key in fields}
    # A request's id is looked up before its op is known, under the error reply's id name.
    assert "F_ERROR_ID" in used
    assert all(initproto.SCHEMAS[op].get("id") == "int" for op in requests)
    expected = {name for name, (op, key) in generated.items()
                if op in ops and not (op in requests and key == "id")}
    assert used & generated.keys() == expected
    names = set(initproto.SCHEMAS) | {k for fields in initproto.SCHEMAS.values() for k in fields}
    code = code.replace('fsopen("overlay"', "")  # the filesystem type
    spelled = {text for text in re.findall(r'"((?:[^"\\\n]|\\.)*)"', code) if text in names}
    assert spelled == set()


# --- the binary and its in-memory copy -----------------------------------------------


def _c_defines() -> dict[str, int]:
    """The numbers coop-init.c and its header #define."""
    source = "".join((CSRC / name).read_text() for name in ("coop-init.c", initproto.C_HEADER))
    return {m[1]: math.prod(int(factor) for factor in m[2].split("*"))
            for m in re.finditer(r"^#define (\w+) \(?([0-9* ]+)\)?\s", source, re.M)}


def test_the_constants_copied_into_the_c_source_match_their_python_originals() -> None:
    defined = _c_defines()
    assert defined["MAX_FRAME"] == initproto.MAX_FRAME
    assert defined["MAX_FDS"] == initproto.MAX_FDS
    assert defined["EXIT_BUG"] == EXEC_FAILED
    assert defined["MAX_HOPS"] == rootpath._MAX_HOPS


def test_lint_compiles_coop_init_with_the_build_flags_and_werror() -> None:
    """The hardening of the installed binary is what `just lint` holds to -Werror."""
    hook = ast.parse((REPO / "packages" / "coop-run" / "hatch_build.py").read_text())
    [flags] = [ast.literal_eval(node.value) for node in hook.body if isinstance(node, ast.Assign)
               and any(isinstance(t, ast.Name) and t.id == "FLAGS" for t in node.targets)]
    assert {"-fstack-protector-strong", "-D_FORTIFY_SOURCE=2"} <= set(flags)
    assert any(re.fullmatch(r"-O[1-3s]", flag) for flag in flags)  # fortify needs -O
    justfile = (REPO / "justfile").read_text()
    variable = re.search(r'^coop_init_flags := "(.*)"$', justfile, re.M)
    lint = re.search(r"^lint:\n((?:    .*\n)+)", justfile, re.M)
    assert variable is not None and lint is not None
    [line] = [line for line in lint[1].splitlines() if "coop-init.c" in line]
    argv = line.replace("{{coop_init_flags}}", variable[1]).split()
    assert set(flags) - {"-static", "-s"} | {"-Werror"} <= set(argv)  # -static, -s: the link's


def test_the_copy_is_sealed_and_made_once_per_process() -> None:
    fd = initexe.exe_fd()
    assert initexe.exe_fd() == fd
    seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL
    with pytest.raises(PermissionError):
        os.write(fd, b"x")
    assert os.get_inheritable(fd) is False


def test_a_copy_whose_descriptor_was_closed_is_made_again() -> None:
    fd = initexe.exe_fd()
    os.close(fd)
    r, w = os.pipe()  # likely takes the same number
    try:
        again = initexe.exe_fd()
        assert os.readlink(f"/proc/self/fd/{again}").startswith("/memfd:coop-init")
        assert again not in (r, w)
    finally:
        os.close(r)
        os.close(w)


def test_a_missing_or_stale_binary_is_a_clear_error(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(initexe, "_exe", KeptFd(initexe._make))  # none made yet
    monkeypatch.setattr(initexe, "BINARY", tmp_path / "coop-init")
    with pytest.raises(SandboxError, match=r"coop-init is missing .* reinstall coop-run"):
        initexe.exe_fd()
    binary = tmp_path / "coop-init"
    binary.write_bytes(b"\x7fELF")
    source = tmp_path / "coop-init.c"
    source.write_text("/* newer */")
    os.utime(binary, (1_000_000, 1_000_000))
    monkeypatch.setattr(initexe, "SOURCE", source)
    with pytest.raises(SandboxError, match=r"older than coop-init\.c: reinstall coop-run"):
        initexe.exe_fd()
