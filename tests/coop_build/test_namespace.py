"""The build runner, for real: overlay + user/mount/pid namespaces on a busybox rootfs.

Runs as root (inside 0..65535 = coop's own id range, never host root) and as the test
user; the ``idmap`` fixture also forces the single mapping (COOP_IDMAP=single), so each
run covers both its full and its single mapping.
"""

from __future__ import annotations

import http.server
import os
import signal
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from coop_build.errors import NamespaceError, ToolError
from coop_build.idmap import IdMap, choose_idmap
from coop_build.namespace import (
    RootfsSpec,
    discard_helper,
    prestart_helper,
    remove_tree,
    run_in_rootfs,
    run_in_userns,
)
from support.host_secrets import mask_probe, planted_secrets
from support.procs import children, pid_alive, reap_zombies, wait_for
from support.require import needs, require
from support.rootfs import as_layer, busybox_available, make_busybox_rootfs

pytestmark = needs(busybox_available(), "needs busybox-static")


@pytest.fixture(params=["auto", "single"])
def idmap(request: pytest.FixtureRequest) -> IdMap:
    """This user's real choice (full with a subuid range), and the forced single map."""
    return choose_idmap(environ={**os.environ, "COOP_IDMAP": request.param})


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return make_busybox_rootfs(tmp_path / "base")


class Steps:
    """Makes fresh upper/work pairs under one directory and runs commands in them."""

    def __init__(self, root: Path, idmap: IdMap) -> None:
        self.root = root
        self.idmap = idmap
        self.count = 0

    def spec(self, *lowers: Path, host_dirs: bool = False,
             binds: tuple[tuple[str, str], ...] = ()) -> RootfsSpec:
        self.count += 1
        step = self.root / f"step{self.count}"
        (step / "fs").mkdir(parents=True)
        (step / "work").mkdir()
        return RootfsSpec(lowers=lowers, upper=step / "fs", work=step / "work",
                          host_dirs=host_dirs, binds=binds)

    def run(self, spec: RootfsSpec, command: str, *, env: dict[str, str] | None = None,
            cwd: str = "/") -> tuple[int, list[str]]:
        lines: list[str] = []
        code = run_in_rootfs(spec, command, env=env or {}, idmap=self.idmap,
                             output=lines.append, cwd=cwd)
        return code, lines


@pytest.fixture
def steps(tmp_path: Path, idmap: IdMap) -> Iterator[Steps]:
    runner = Steps(tmp_path / "steps", idmap)
    yield runner
    # Files may belong to sub-uids: clean with the same mapping (also proves remove_tree).
    remove_tree(tmp_path / "steps", idmap)
    assert not (tmp_path / "steps").exists()


def upper_entries(spec: RootfsSpec) -> set[str]:
    return {str(p.relative_to(spec.upper)) for p in spec.upper.rglob("*")}


def test_root_inside_and_writes_land_in_upper(base: Path, steps: Steps) -> None:
    before = {str(p.relative_to(base)) for p in base.rglob("*")}
    spec = steps.spec(base)
    code, lines = steps.run(spec, "id -u; id -g; echo data > /newfile; mkdir -p /usr/new; "
                                  "rm /bin/cat; echo oops >&2; exit 7")
    assert code == 7
    assert lines == ["0", "0", "oops"]
    assert (spec.upper / "newfile").read_text() == "data\n"
    assert (spec.upper / "usr" / "new").is_dir()
    whiteout = os.lstat(spec.upper / "bin" / "cat")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert {str(p.relative_to(base)) for p in base.rglob("*")} == before
    assert (base / "bin" / "cat").is_symlink()


def test_upper_as_lower_keeps_whiteouts_and_opaque_dirs(tmp_path: Path, steps: Steps) -> None:
    base = make_busybox_rootfs(tmp_path / "base")
    (base / "data" / "old").mkdir(parents=True)
    (base / "data" / "old" / "x").write_text("x")
    (base / "data" / "gone.txt").write_text("bye")
    as_layer(base)
    s1 = steps.spec(base)
    code, _ = steps.run(s1, "rm /data/gone.txt && rm -rf /data/old && mkdir /data/old && "
                            "echo new > /data/old/y")
    assert code == 0
    assert os.getxattr(s1.upper / "data" / "old", "user.overlay.opaque") == b"y"
    assert stat.S_ISCHR(os.lstat(s1.upper / "data" / "gone.txt").st_mode)

    s2 = steps.spec(base, s1.upper)
    code, lines = steps.run(s2, "test ! -e /data/gone.txt && echo absent; ls /data/old")
    assert code == 0
    assert lines == ["absent", "y"]
    assert upper_entries(s2) == set()


def test_mountpoints_never_land_in_upper(tmp_path: Path, steps: Steps) -> None:
    base = make_busybox_rootfs(tmp_path / "base", resolv_conf=False)
    for name in ("proc", "dev", "tmp"):
        (base / name).rmdir()
    spec = steps.spec(base)
    code, lines = steps.run(spec, "cat /etc/resolv.conf; echo x > /tmp/scratch; ls /proc/1 "
                                  ">/dev/null && echo proc-ok; test -c /dev/null && echo dev-ok")
    assert code == 0
    host_resolv = Path(os.path.realpath("/etc/resolv.conf")).read_text().splitlines()
    assert lines == [*host_resolv, "proc-ok", "dev-ok"]
    assert upper_entries(spec) == set()


def test_step_output_from_resolv_is_read_only(base: Path, steps: Steps) -> None:
    code, _ = steps.run(steps.spec(base), "echo nameserver 1.2.3.4 > /etc/resolv.conf")
    assert code != 0


def test_host_is_invisible_and_proc_is_private(tmp_path: Path, base: Path,
                                               steps: Steps) -> None:
    marker = tmp_path / "host-secret"
    marker.write_text("secret")
    code, lines = steps.run(
        steps.spec(base),
        f"test -e {marker} && echo visible; ls /; echo ---; ls /proc | grep -E '^[0-9]+$'",
    )
    assert code == 0
    sep = lines.index("---")
    assert "visible" not in lines
    assert set(lines[:sep]) == {"bin", "dev", "etc", "proc", "root", "sbin", "tmp", "usr"}
    pids = {int(p) for p in lines[sep + 1:]}
    assert 1 in pids
    assert max(pids) < 50  # only the namespace's own few processes (host ones are far up)
    assert str(os.getpid()) not in lines[sep + 1:] or os.getpid() < 50


def test_pid1_holds_no_way_out(tmp_path: Path, base: Path, steps: Steps) -> None:
    """PID 1 opened the layers (and any trust file) before it became the namespace's
    root; a step, the same uid, must find none of those descriptors in /proc/1/fd: one of
    them followed by ``..`` walked out of pivot_root to the host's files."""
    marker = tmp_path / "host-secret"
    marker.write_text("secret\n")
    trust = tmp_path / "ca.pem"
    trust.write_text("corp CA\n")
    spec = steps.spec(base, binds=((str(trust), "/etc/ca.pem"),))
    code, lines = steps.run(spec, "ls /proc/1/fd 2>&1 | head -3; "
                                  "for f in /proc/1/fd/*; do cat \"$f/../host-secret\" "
                                  "\"$f/../../host-secret\" 2>/dev/null; done; "
                                  "cat /etc/ca.pem; echo end")
    assert code == 0, lines
    assert "secret" not in lines, lines
    assert lines[-2:] == ["corp CA", "end"], lines


def test_env_cwd_and_signal_exit(base: Path, steps: Steps) -> None:
    spec = steps.spec(base)
    code, lines = steps.run(spec, 'echo "$FOO|$PATH|$HOME"; pwd', env={"FOO": "bar"},
                            cwd="/usr")
    assert code == 0
    assert lines == ["bar|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|", "/usr"]
    code, lines = steps.run(spec, "env | sort", env={"PATH": "/bin", "A": "1"})
    assert code == 0
    assert {line.split("=")[0] for line in lines} <= {"A", "PATH", "PWD", "SHLVL"}
    assert "A=1" in lines and "PATH=/bin" in lines
    code, _ = steps.run(spec, "kill -TERM $$")
    assert code == 128 + signal.SIGTERM


def test_host_network_reachable(base: Path, steps: Steps) -> None:
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello from the host\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        code, lines = steps.run(steps.spec(base), f"wget -q -O - http://127.0.0.1:{port}/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert code == 0
    assert lines == ["hello from the host"]


def test_chown_to_subids_survives_into_next_step(tmp_path: Path, base: Path,
                                                 idmap: IdMap) -> None:
    if not idmap.full and choose_idmap(environ={**os.environ, "COOP_IDMAP": "auto"}).full:
        pytest.skip("the forced single map has no sub-ids to chown to")  # the other param's
    else:
        require(idmap.full, "this user has no subordinate id range")
    steps = Steps(tmp_path / "full", idmap)
    try:
        s1 = steps.spec(base)
        code, lines = steps.run(s1, "touch /f && chown 100:100 /f && stat -c %u:%g /f")
        assert (code, lines) == (0, ["100:100"])
        st = os.lstat(s1.upper / "f")
        assert (st.st_uid, st.st_gid) == (idmap.host_uid(100), idmap.host_gid(100))
        s2 = steps.spec(base, s1.upper)
        code, lines = steps.run(s2, "stat -c %u:%g /f; echo more >> /f; stat -c %u /f")
        assert (code, lines) == (0, ["100:100", "100"])
        assert os.lstat(s2.upper / "f").st_uid == idmap.host_uid(100)
    finally:
        remove_tree(tmp_path / "full", idmap)
    assert not (tmp_path / "full").exists()


def test_single_mapping_shows_foreign_owner_as_overflow(tmp_path: Path, base: Path) -> None:
    single = IdMap.single(*choose_idmap().owner)  # inside 0 alone (root: coop's range)
    steps = Steps(tmp_path / "single", single)
    code, lines = steps.run(steps.spec(base), "stat -c %u /bin/busybox; chown 5 /tmp/ || "
                                              "echo refused")
    assert code == 0
    assert lines[0] == "0"
    assert lines[-1] == "refused"
    remove_tree(tmp_path / "single", single)


def test_host_dirs_mode(steps: Steps) -> None:
    """image = "host": the host's directories are the lowest layers; a step's writes there
    land in its own upper at their place, the host's symlinks stay symlinks, and the host
    is never written."""
    spec = steps.spec(host_dirs=True)
    name = f"coop-test-{uuid.uuid4().hex[:12]}"
    code, lines = steps.run(spec, f"ls /usr/bin | head -3; readlink /bin; "
                                  f"echo etc > /etc/{name}; echo usr > /usr/{name}; "
                                  f"rm /etc/hostname; echo kept > /output")
    assert code == 0, lines
    assert len(lines) == 4
    assert lines[3] == ("usr/bin" if Path("/bin").is_symlink() else "")
    assert not Path(f"/etc/{name}").exists() and not Path(f"/usr/{name}").exists()
    assert Path("/etc/hostname").exists()
    assert (spec.upper / "etc" / name).read_text() == "etc\n"
    assert (spec.upper / "usr" / name).read_text() == "usr\n"
    whiteout = os.lstat(spec.upper / "etc" / "hostname")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert upper_entries(spec) == {"output", "etc", "usr", f"etc/{name}", "etc/hostname",
                                   f"usr/{name}"}


def test_extra_binds_are_read_only_and_leave_no_mount_points(tmp_path: Path, base: Path,
                                                             steps: Steps) -> None:
    trust = tmp_path / "trust"
    (trust / "certs").mkdir(parents=True)
    (trust / "ca.pem").write_text("corp CA\n")
    (trust / "certs" / "a.pem").write_text("cert a\n")
    binds = (
        (str(trust / "ca.pem"), "/etc/corp/ca.pem"),  # its directory is missing too
        (str(trust / "certs"), "/opt/corp/certs"),
        (str(trust / "ca.pem"), "/etc/passwd"),  # over a file the image has
    )
    spec = steps.spec(base, binds=binds)
    code, lines = steps.run(spec, "cat /etc/corp/ca.pem /opt/corp/certs/a.pem /etc/passwd; "
                                  "echo x 2>/dev/null > /etc/corp/ca.pem || echo file-ro; "
                                  "touch /opt/corp/certs/b 2>/dev/null || echo dir-ro; "
                                  "echo kept > /etc/corp/mine")
    assert code == 0
    assert lines == ["corp CA", "cert a", "corp CA", "file-ro", "dir-ro"]
    assert (trust / "ca.pem").read_text() == "corp CA\n"
    assert sorted(p.name for p in (trust / "certs").iterdir()) == ["a.pem"]
    # Only what the step itself wrote stays in its layer, not our mount points.
    assert upper_entries(spec) == {"etc", "etc/corp", "etc/corp/mine"}
    with pytest.raises(NamespaceError, match="must be absolute"):
        steps.run(steps.spec(base, binds=(("ca.pem", "/etc/ca.pem"),)), "true")


def test_host_dirs_hide_the_hosts_secrets(steps: Steps) -> None:
    """A host-image step sees /etc, but over each of its secrets an empty read-only file
    (an empty directory over sudoers.d), whoever runs the build."""
    with planted_secrets() as planted:
        script, masked = mask_probe(planted)
        script += "; grep -c '^root:' /etc/passwd"  # the rest of /etc is the host's
        code, lines = steps.run(steps.spec(host_dirs=True), script)
    assert code == 0, lines
    assert lines == [*masked, "1"]


def test_sigint_to_caller_kills_the_namespace(tmp_path: Path, base: Path) -> None:
    token = "987654"
    script = tmp_path / "caller.py"
    script.write_text(f"""
import sys
from pathlib import Path
from coop_build.idmap import choose_idmap
from coop_build.namespace import RootfsSpec, run_in_rootfs

def out(line):
    print(line, flush=True)

spec = RootfsSpec(lowers=(Path({str(base)!r}),), upper=Path({str(tmp_path / "up")!r}),
                  work=Path({str(tmp_path / "work")!r}))
try:
    run_in_rootfs(spec, "echo started; sleep {token}; echo not-reached",
                  env={{}}, idmap=choose_idmap(), output=out)
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(1)
""")
    (tmp_path / "up").mkdir()
    (tmp_path / "work").mkdir()
    caller = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert caller.stdout is not None
        assert caller.stdout.readline() == "started\n"
        assert wait_for(lambda: token_processes(token), 10, "the sleep inside")
        caller.send_signal(signal.SIGINT)
        assert caller.wait(timeout=30) == 130
        assert caller.stdout.read() == ""
        # run_in_rootfs waits for the namespace to be empty before re-raising.
        assert token_processes(token) == []
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
        assert caller.stdout is not None
        caller.stdout.close()
    assert not any(p.name.startswith(".coop-mnt-") for p in tmp_path.iterdir())


def test_caller_death_kills_the_namespace(tmp_path: Path, base: Path) -> None:
    token = "876543"
    script = tmp_path / "caller.py"
    script.write_text(f"""
from pathlib import Path
from coop_build.idmap import choose_idmap
from coop_build.namespace import RootfsSpec, run_in_rootfs

spec = RootfsSpec(lowers=(Path({str(base)!r}),), upper=Path({str(tmp_path / "up")!r}),
                  work=Path({str(tmp_path / "work")!r}))
run_in_rootfs(spec, "echo started; sleep {token}", env={{}}, idmap=choose_idmap(),
              output=lambda line: print(line, flush=True))
""")
    (tmp_path / "up").mkdir()
    (tmp_path / "work").mkdir()
    caller = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert caller.stdout is not None
        assert caller.stdout.readline() == "started\n"
        assert wait_for(lambda: token_processes(token), 10, "the sleep inside")
        caller.kill()
        caller.wait()
        wait_for(lambda: token_processes(token) == [], 10, "the namespace to die with its caller")
        # Orphaned, the helper (re-parented to pytest, a subreaper) cleans up and exits.
        wait_for(lambda: not [p for p in children() if p.alive and "_nsexec" in p.cmdline],
                 10, "the orphaned helper to finish")
        reap_zombies()
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
        assert caller.stdout is not None
        caller.stdout.close()


def token_processes(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if token.encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


def test_setup_errors_are_namespace_errors(tmp_path: Path, base: Path, steps: Steps) -> None:
    with pytest.raises(NamespaceError, match="does not exist"):
        steps.run(RootfsSpec(lowers=(tmp_path / "missing",), upper=base, work=base), "true")
    odd = tmp_path / "a,b"
    odd.mkdir()
    with pytest.raises(NamespaceError, match="overlay mount"):
        steps.run(steps.spec(odd), "true")
    with pytest.raises(NamespaceError, match="working directory /nonexistent"):
        steps.run(steps.spec(base), "true", cwd="/nonexistent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NamespaceError, match="cannot run /bin/sh"):
        steps.run(steps.spec(empty), "true")


def test_run_in_userns(tmp_path: Path, idmap: IdMap) -> None:
    run_in_userns(["sh", "-c", 'test "$(id -u)" = 0'], idmap=idmap)
    with pytest.raises(ToolError, match="failed in a user namespace: boom") as info:
        run_in_userns(["sh", "-c", "echo boom >&2; exit 3"], idmap=idmap)
    assert info.value.tool == "sh"
    with pytest.raises(ToolError, match="cannot run /nonexistent/prog"):
        run_in_userns(["/nonexistent/prog"], idmap=idmap)


def test_remove_tree_plain(tmp_path: Path, idmap: IdMap) -> None:
    tree = tmp_path / "t"
    (tree / "ro").mkdir(parents=True)
    (tree / "ro" / "f").write_text("x")
    (tree / "ro").chmod(0o500)
    remove_tree(tree, idmap)
    assert not tree.exists()
    remove_tree(tree, idmap)  # absent: nothing to do


def test_resolv_conf_symlink_is_followed_inside_the_rootfs(tmp_path: Path, steps: Steps) -> None:
    base = make_busybox_rootfs(tmp_path / "base", resolv_conf=False)
    (base / "etc" / "resolv.conf").symlink_to("../run/resolve/stub-resolv.conf")  # dangling
    spec = steps.spec(base)
    code, lines = steps.run(spec, "cat /etc/resolv.conf; echo kept > /run/resolve/other")
    assert code == 0
    host_resolv = Path(os.path.realpath("/etc/resolv.conf")).read_text().splitlines()
    assert lines == host_resolv
    # Our mount point went away again; the step's own file (and its dirs) stayed.
    assert upper_entries(spec) == {"run", "run/resolve", "run/resolve/other"}


def _helpers() -> set[int]:
    return {p.pid for p in children() if "coop_build._nsexec" in p.cmdline}


def test_prestarted_helper_runs_the_next_step(base: Path, steps: Steps) -> None:
    helper = prestart_helper()
    assert prestart_helper() == helper  # one waits at a time
    assert _helpers() == {helper}
    seen: list[set[int]] = []

    def output(line: str) -> None:
        seen.append(_helpers())  # while the step runs: which helper runs it

    code = run_in_rootfs(steps.spec(base), "echo hi; exit 7", env={}, idmap=steps.idmap,
                         output=output)
    assert (code, seen) == (7, [{helper}])
    assert not pid_alive(helper)
    code, lines = steps.run(steps.spec(base), "echo again")  # the next one starts its own
    assert (code, lines) == (0, ["again"])


def test_unused_prestarted_helper_ends_on_discard() -> None:
    helper = prestart_helper()
    assert helper in _helpers()
    discard_helper()
    assert helper not in _helpers()
    assert not pid_alive(helper)
    discard_helper()  # nothing waiting: a no-op


def test_dead_prestarted_helper_is_replaced(base: Path, steps: Steps) -> None:
    helper = prestart_helper()
    os.kill(helper, signal.SIGKILL)
    wait_for(lambda: not pid_alive(helper), 5, "the killed helper to die")
    code, lines = steps.run(steps.spec(base), "echo fresh")
    assert (code, lines) == (0, ["fresh"])
    assert helper not in _helpers()
