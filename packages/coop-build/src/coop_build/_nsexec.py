"""The helper process behind ``coop_build.namespace`` (run as ``python -m``; private).

A fresh single-threaded interpreter, so forking is safe whatever threads the caller has.
It reads one JSON request on stdin, then::

    helper H --fork--> C: unshare(user, mount, pid, uts, ipc); H writes C's id maps
                       C --fork--> P = PID 1: overlay, /proc, /dev, /tmp, binds, pivot_root
                                   P --fork--> /bin/sh -c COMMAND   (P reaps until it exits)

With ``image = "host"`` each of the host's own directories is the lowest layer of an
overlay of its own at its place (``hostlayer``); its upper and work dirs are in H's
scratch dir, and after the step H moves each upper into the step's upper at that place,
so that the step's layer holds everything it wrote, host directories included.

C opens the step's directories (layers, upper, work, the helper's scratch dir) as
``O_PATH`` descriptors before it becomes uid 0 of the namespace, and the mounts name
them as ``/proc/self/fd/N``: while C is still the caller's own host uid it may walk the
caller's private directories (root's ``/root``, a 0700 ``COOP_HOME``), which root's
namespace uid (an unprivileged id of coop's range) may not.

Each process gets PR_SET_PDEATHSIG from its parent, so killing the caller or H tears the
whole tree down; H kills P on SIGTERM/SIGINT and waits, and P's death empties the PID
namespace before C can reap it. The shell's stdout and stderr are H's stdout; H's stderr
carries only our own failures, as one JSON object per line. H exits with the command's
exit code (128+N for a signal).
"""

# This module works on str paths and raw fds in freshly forked processes, on purpose.
# ruff: noqa: PTH102, PTH104, PTH106, PTH108, PTH112, PTH113, PTH114, PTH118, PTH119, PTH120, PTH202, PTH208, PTH211

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import select
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from coop_build import linux
from coop_build.errors import CoopBuildError, ToolError
from coop_build.hostlayer import host_layout, layer_lowers
from coop_build.idmap import IdMap, write_idmap
from coop_build.namespace import force_rmtree, hand_over
from coop_build.rootlayout import (
    DEFAULT_PATH,
    DEV_LINKS,
    DEV_NODES,
    HOST_STEP_COPIES,
    host_secrets,
)
from coop_build.rootpath import resolve_in_root

SETUP_FAILED = 125
BLANK = "blank"  # an empty read-only file in the helper's scratch dir, bound over secrets
NS_FLAGS = (
    linux.CLONE_NEWUSER | linux.CLONE_NEWNS | linux.CLONE_NEWPID | linux.CLONE_NEWUTS
    | linux.CLONE_NEWIPC
)


def report(message: str, **extra: Any) -> None:
    """One JSON error line on fd 2 (the caller turns it into an exception)."""
    line = json.dumps({"error": message, **extra}) + "\n"
    with contextlib.suppress(OSError):
        os.write(2, line.encode())


def exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def default_signals() -> None:
    """Undo Python's signal set-up before exec (it ignores SIGPIPE and SIGXFSZ)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)


# --- paths inside the new root -------------------------------------------------------


class Mountpoints:
    """Creates missing mount points in the merged tree and remembers what it did.

    Whatever we create lands in an upper dir: the step's, or below a host directory
    (``add_upper``) that one's. The helper removes it after the step (``created``),
    together with directories copied up only because we created something inside them
    (``copied``); each action names its upper by index (0: the step's).
    """

    def __init__(self, root: str, upper: str) -> None:
        self.root = root
        self.uppers = [("", upper)]  # (path prefix, upper dir); the longest prefix holds
        self.actions: list[tuple[str, int, str]] = []

    def add_upper(self, rel: str, upper: str) -> None:
        """From now on what is created below ``rel`` lands in ``upper``."""
        self.uppers.append((rel, upper))

    def ensure(self, rel: str, kind: str, link: str = "") -> str:
        rel = resolve_in_root(self.root, rel) if kind != "symlink" else rel.strip("/")
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            self._ensure_dir("/".join(parts[:depth]))
        path = os.path.join(self.root, rel)
        if os.path.lexists(path):
            return path
        self._note_parent(rel)
        if kind == "dir":
            os.mkdir(path, 0o755)
        elif kind == "file":
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        else:
            os.symlink(link, path)
        self._record("created", rel)
        return path

    def _ensure_dir(self, rel: str) -> None:
        path = os.path.join(self.root, rel)
        if not os.path.lexists(path):
            self._note_parent(rel)
            os.mkdir(path, 0o755)
            self._record("created", rel)

    def _upper_of(self, rel: str) -> tuple[int, str]:
        """(index of the upper ``rel`` lands in, ``rel`` relative to that upper)."""
        best = 0
        for index, (prefix, _) in enumerate(self.uppers):
            if (rel == prefix or rel.startswith(prefix + "/")) and len(prefix) > len(
                    self.uppers[best][0]):
                best = index
        return best, rel[len(self.uppers[best][0]):].lstrip("/")

    def _record(self, kind: str, rel: str) -> None:
        index, inside = self._upper_of(rel)
        self.actions.append((kind, index, inside))

    def _note_parent(self, rel: str) -> None:
        parent = os.path.dirname(rel)
        if not parent:
            return
        index, inside = self._upper_of(parent)
        if inside and not os.path.lexists(os.path.join(self.uppers[index][1], inside)):
            self.actions.append(("copied", index, inside))


def clean_upper(uppers: list[str], actions: list[list[Any]]) -> None:
    """Remove what ``Mountpoints`` put into the upper dirs, newest first."""
    for kind, index, rel in reversed(actions):
        path = os.path.join(uppers[index], rel)
        with contextlib.suppress(OSError):
            if os.path.islink(path) and kind == "created":
                os.unlink(path)
            elif os.path.isdir(path):
                os.rmdir(path)  # only if empty: the step may have used it
            elif kind == "created" and os.path.isfile(path) and os.path.getsize(path) == 0:
                os.unlink(path)


def copy_host_files(req: dict[str, Any]) -> list[str]:
    """Before the step: ``HOST_STEP_COPIES`` still the host's (no layer has its own) are
    copied into their host directory's upper; the copies made (what the step is given
    back the host's own of when it leaves them unchanged: ``drop_unchanged_copies``)."""
    made = []
    for layer in req.get("host_layers", ()):
        for rel in HOST_STEP_COPIES:
            inside = os.path.relpath(rel, layer["rel"])
            if inside.startswith("..") or not os.path.isfile(f"/{rel}") or any(
                    os.path.lexists(f"{lower}/{inside}") for lower in layer["lowers"][1:]):
                continue
            copy = os.path.join(layer["upper"], inside)
            shutil.copyfile(f"/{rel}", copy)
            Path(copy).chmod(0o644)
            made.append(copy)
    return made


def drop_unchanged_copies(copies: list[str], req: dict[str, Any]) -> None:
    for layer in req.get("host_layers", ()):
        for copy in copies:
            inside = os.path.relpath(copy, layer["upper"])
            if inside.startswith(".."):
                continue
            with contextlib.suppress(OSError):
                if filecmp.cmp(copy, os.path.join("/", layer["rel"], inside), shallow=False):
                    os.unlink(copy)


def place_host_uppers(req: dict[str, Any], idmap: IdMap) -> None:
    """After the step: each host directory's upper goes to its place in the step's upper,
    so that the layer holds the step's writes there (an untouched one is removed)."""
    for layer in req.get("host_layers", ()):
        upper = layer["upper"]
        if not os.listdir(upper):
            os.rmdir(upper)
            continue
        dest = os.path.join(req["upper"], layer["rel"])
        parent = os.path.dirname(dest)
        missing = []
        while not os.path.lexists(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        for path in reversed(missing):
            os.mkdir(path, 0o755)
        hand_over(missing, idmap)
        if os.path.lexists(dest):
            os.rmdir(dest)  # an empty mount point left over; anything else is a bug
        os.rename(upper, dest)


# --- PID 1 -----------------------------------------------------------------------------


def overlay_options(lowers: list[str], upper: str, work: str) -> str:
    """Overlay mount data; lowers are given bottom-first, overlay wants top-first."""
    return (
        f"lowerdir={':'.join(reversed(lowers))},upperdir={upper},workdir={work},userxattr"
    )


def fd_path(fd: int) -> str:
    """A path naming what ``fd`` is, whoever may walk to it."""
    return f"/proc/self/fd/{fd}"


def open_dirs(req: dict[str, Any], scratch: str) -> None:
    """C, still the caller's host uid: the step's directories as descriptors, named as
    ``/proc/self/fd/N`` in ``req`` from now on; then into the helper's scratch dir, which
    holds the root's mount point (the mounts' relative targets start there)."""
    fds: list[int] = []

    def opened(path: str, flags: int = os.O_DIRECTORY) -> str:
        fds.append(os.open(path, os.O_PATH | flags))
        return fd_path(fds[-1])

    req["lowers"] = [opened(p) for p in req["lowers"]]
    req["upper"] = opened(req["upper"])
    req["work"] = opened(req["work"])
    for layer in req.get("host_layers", ()):
        layer["lowers"] = [opened(p) for p in layer["lowers"]]
        layer["upper"] = opened(layer["upper"])
        layer["work"] = opened(layer["work"])
    # Extra read-only binds (the TLS trust files) may lie below root's 0700 directories.
    req["binds"] = [[opened(source, 0), target] for source, target in req.get("binds", ())]
    req["fds"] = fds
    os.chdir(scratch)


def close_dirs(req: dict[str, Any]) -> None:
    """P, once the root is set up: drop every descriptor ``open_dirs`` made. Each leads
    outside the new root (``/proc/1/fd/N/..`` walks past ``pivot_root``), and the step's
    processes, the same uid as PID 1, could otherwise follow them from ``/proc/1/fd``."""
    for fd in req.pop("fds", ()):
        os.close(fd)


def setup_root(req: dict[str, Any], root: str, points: Mountpoints) -> None:
    """Everything PID 1 mounts before ``pivot_root`` (runs in the new mount namespace;
    ``root`` is relative to the helper's scratch dir, the working directory)."""
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.mount("overlay", root, "overlay", 0,
                overlay_options(req["lowers"], req["upper"], req["work"]))

    proc = points.ensure("proc", "dir")
    linux.mount("proc", proc, "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    dev = points.ensure("dev", "dir")
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID | linux.MS_NOEXEC, "mode=0755")
    for node in DEV_NODES:
        target = os.path.join(dev, node)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o666))
        linux.bind_mount(f"/dev/{node}", target)
    for name, link in DEV_LINKS:
        os.symlink(link, os.path.join(dev, name))
    os.mkdir(os.path.join(dev, "pts"))
    linux.mount("devpts", os.path.join(dev, "pts"), "devpts", linux.MS_NOSUID | linux.MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620")
    os.mkdir(os.path.join(dev, "shm"))
    linux.mount("tmpfs", os.path.join(dev, "shm"), "tmpfs",
                linux.MS_NOSUID | linux.MS_NODEV, "mode=1777")
    tmp = points.ensure("tmp", "dir")
    linux.mount("tmpfs", tmp, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=1777")

    if req["host_dirs"]:
        # Each host directory: an overlay of its own, the host's at the bottom.
        for layer in req["host_layers"]:
            target = points.ensure(layer["rel"], "dir")
            linux.mount("overlay", target, "overlay", 0,
                        overlay_options(layer["lowers"], layer["upper"], layer["work"]))
            points.add_upper(layer["rel"], layer["upper"])
        for name, link in req["host_links"]:
            points.ensure(name, "symlink", link)
        # The host's secrets under them: an empty read-only file or directory over each.
        for rel, is_dir in host_secrets():
            target = points.ensure(rel, "dir" if is_dir else "file")
            if is_dir:
                linux.mount("tmpfs", target, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV
                            | linux.MS_NOEXEC | linux.MS_RDONLY, "mode=0555")
            else:
                linux.bind_mount(BLANK, target, readonly=True)

    # The host's resolver config, followed to its real file (often a symlink into /run),
    # bound over wherever the rootfs's /etc/resolv.conf leads.
    resolv = os.path.realpath("/etc/resolv.conf")
    if os.path.isfile(resolv):
        linux.bind_mount(resolv, points.ensure("etc/resolv.conf", "file"), readonly=True)
    for source, target in req.get("binds", ()):
        kind = "dir" if os.path.isdir(source) else "file"
        linux.bind_mount(source, points.ensure(target, kind), readonly=True)

    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")


def pid1(req: dict[str, Any], root: str, info_w: int, life_r: int) -> NoReturn:
    """PID 1 of the new namespace: set the root up, run the command, reap until it ends."""
    points = Mountpoints(root, req["upper"])
    try:
        linux.set_pdeathsig(signal.SIGKILL)
        if select.select([life_r], [], [], 0)[0]:  # C already gone: never run orphaned
            os._exit(SETUP_FAILED)
        os.close(life_r)
        # No handlers: as PID 1 we are then immune to signals sent from inside.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        # Nothing inside may read PID 1's memory or descriptors (its ids never change, so
        # the kernel would leave it open to processes of the same uid).
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        try:
            setup_root(req, root, points)
        finally:
            close_dirs(req)
            os.write(info_w, json.dumps(points.actions).encode())
            os.close(info_w)
        env = dict(req["env"])
        env.setdefault("PATH", DEFAULT_PATH)
        try:
            os.chdir(req["cwd"])
        except OSError as exc:
            report(f"working directory {req['cwd']} is not usable in the rootfs: {exc.strerror}")
            os._exit(SETUP_FAILED)
        shell = os.fork()
        if shell == 0:
            errfd = os.dup(2)
            try:
                default_signals()
                os.setsid()
                os.dup2(1, 2)
                os.execve("/bin/sh", ["/bin/sh", "-c", req["command"]], env)  # noqa: S606
            except OSError as exc:
                os.dup2(errfd, 2)
                report(f"cannot run /bin/sh in the rootfs: {exc.strerror}")
            os._exit(127)
        while True:
            pid, status = os.wait()
            if pid == shell:
                os._exit(exit_code(status))
    except BaseException as exc:
        report(f"build namespace setup failed: {exc}")
        os._exit(SETUP_FAILED)


# --- C: the process that owns the namespaces ----------------------------------------


def child(req: dict[str, Any], helper: int, fds: tuple[int, int, int], root: str) -> NoReturn:
    """C: unshare, wait for the maps, become root, then fork PID 1 (or exec, userns mode)."""
    to_h, from_h, info_w = fds
    try:
        linux.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != helper:
            os._exit(SETUP_FAILED)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        linux.unshare(NS_FLAGS if req["mode"] == "rootfs" else linux.CLONE_NEWUSER)
        os.write(to_h, b"u")
        if os.read(from_h, 1) != b"g":
            os._exit(SETUP_FAILED)
        if req["mode"] == "rootfs":
            open_dirs(req, os.path.dirname(root))
            root = os.path.basename(root)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        with contextlib.suppress(OSError):  # refused after "deny" (single mapping)
            os.setgroups([])
        if req["mode"] == "userns":
            os.dup2(1, 2)
            default_signals()
            try:
                os.execvp(req["argv"][0], req["argv"])  # noqa: S606
            except OSError as exc:
                os.write(to_h, json.dumps({"exec": exc.strerror}).encode())
            os._exit(127)
        linux.sethostname("coop-build")
        life_r, life_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(life_w)
            os.close(to_h)
            os.close(from_h)
            pid1(req, root, info_w, life_r)
        os.close(life_r)
        os.close(info_w)
        os.write(to_h, f"{pid}\n".encode())
        os.close(to_h)
        _, status = os.waitpid(pid, 0)
        os._exit(exit_code(status))
    except BaseException as exc:
        report(f"build namespace setup failed: {exc}")
        os._exit(SETUP_FAILED)


# --- H: the helper ---------------------------------------------------------------------


class Helper:
    def __init__(self, req: dict[str, Any]) -> None:
        self.req = req
        self.child = 0
        self.pid1 = 0
        self.stopping = False
        self.copies: list[str] = []  # copy_host_files

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        victim = self.pid1 or self.child
        if victim:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)

    def run(self) -> int:
        req = self.req
        tmpdir = ""
        root = ""
        if req["mode"] == "rootfs":
            tmpdir = tempfile.mkdtemp(prefix=".coop-mnt-", dir=os.path.dirname(req["work"]))
            root = os.path.join(tmpdir, "root")
            os.mkdir(root)
            made = [tmpdir, root, req["upper"], req["work"]]
            blank = os.path.join(tmpdir, BLANK)
            os.close(os.open(blank, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444))
            if not req["lowers"]:
                empty = os.path.join(tmpdir, "empty")
                os.mkdir(empty)
                req["lowers"] = [empty]
                made.append(empty)
            if req["host_dirs"]:
                made += plan_host_layers(req, tmpdir)
                self.copies = copy_host_files(req)
            hand_over([*made, blank, *self.copies], idmap_from_json(req["idmap"]))
        try:
            return self._run(root)
        finally:
            if tmpdir:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(tmpdir, BLANK))
                for sub in ("root", "empty"):
                    with contextlib.suppress(FileNotFoundError):
                        os.rmdir(os.path.join(tmpdir, sub))
                # overlay's work dirs hold a mode-0 "work"; what stays goes with the
                # step's scratch dir, which the store removes whatever happens
                with contextlib.suppress(OSError, CoopBuildError):
                    force_rmtree(Path(tmpdir, "host"))
                with contextlib.suppress(OSError):
                    os.rmdir(tmpdir)

    def _run(self, root: str) -> int:
        to_h_r, to_h_w = os.pipe()
        from_h_r, from_h_w = os.pipe()
        info_r, info_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(to_h_r)
            os.close(from_h_w)
            os.close(info_r)
            child(self.req, os.getppid(), (to_h_w, from_h_r, info_w), root)
        self.child = pid
        for fd in (to_h_w, from_h_r, info_w):
            os.close(fd)
        try:
            if self.stopping:
                os.kill(pid, signal.SIGKILL)
            elif os.read(to_h_r, 1) == b"u":
                try:
                    write_idmap(pid, idmap_from_json(self.req["idmap"]))
                except CoopBuildError as exc:
                    os.kill(pid, signal.SIGKILL)
                    extra = {"tool": exc.tool, "stderr": exc.stderr} if isinstance(
                        exc, ToolError) else {}
                    report(exc.message, **extra)
                else:
                    os.write(from_h_w, b"g")
            msg = read_all(to_h_r)
            if msg.startswith(b"{"):
                report(f"cannot run {self.req['argv'][0]}: {json.loads(msg)['exec']}",
                       exec_failed=True)
            elif msg.strip().isdigit():
                self.pid1 = int(msg)
                if self.stopping:
                    os.kill(self.pid1, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            code = exit_code(status)
            actions = read_all(info_r)
            if self.req["mode"] == "rootfs":
                uppers = [self.req["upper"],
                          *(h["upper"] for h in self.req.get("host_layers", ()))]
                if actions:
                    clean_upper(uppers, json.loads(actions))
                drop_unchanged_copies(self.copies, self.req)
                place_host_uppers(self.req, idmap_from_json(self.req["idmap"]))
            return code
        finally:
            for fd in (to_h_r, from_h_w, info_r):
                os.close(fd)


def plan_host_layers(req: dict[str, Any], tmpdir: str) -> list[str]:
    """``req["host_layers"]`` (each host directory's place, lowers, upper and work, the
    last two made here) and ``req["host_links"]``; the directories made."""
    layout = host_layout()
    base = os.path.join(tmpdir, "host")
    os.mkdir(base)
    made = [base]
    layers = []
    for index, rel in enumerate(layout.dirs):
        upper, work = os.path.join(base, f"upper{index}"), os.path.join(base, f"work{index}")
        os.mkdir(upper)
        os.mkdir(work)
        made += [upper, work]
        layers.append({"rel": rel, "lowers": list(layer_lowers(rel, req["lowers"])),
                       "upper": upper, "work": work})
    req["host_layers"] = layers
    req["host_links"] = [list(link) for link in layout.links]
    return made


def idmap_from_json(data: dict[str, list[list[int]]]) -> IdMap:
    def lines(key: str) -> tuple[tuple[int, int, int], ...]:
        return tuple((int(a), int(b), int(c)) for a, b, c in data[key])

    return IdMap(uid_map=lines("uid_map"), gid_map=lines("gid_map"))


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def main() -> NoReturn:
    caller = int(sys.argv[1])
    linux.set_pdeathsig(signal.SIGTERM)
    if os.getppid() != caller:
        os._exit(SETUP_FAILED)
    data = sys.stdin.buffer.read()
    if not data:
        os._exit(0)  # a prestarted helper its caller did not need (prestart_helper)
    req = json.loads(data)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    helper = Helper(req)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, helper.on_signal)
    try:
        code = helper.run()
    except Exception as exc:
        report(f"build namespace helper failed: {exc}")
        code = SETUP_FAILED
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
