"""The build runner: one shell command inside a rootfs, in user+mount+pid namespaces.

The rootfs is an overlay of read-only layer directories with this step's ``upper`` on
top; after the step, ``upper`` *is* the step's layer (whiteouts and opaque dirs
included) and can be a lower of the next one. The step sees the host's network, the
host's resolv.conf, a fresh ``/proc``, a minimal ``/dev`` and a tmpfs ``/tmp``; uid 0
inside is the invoking user (plus the subordinate range when there is one), or for root
coop's own id range (see ``idmap``). Nothing of the host outside those mounts is
reachable (``pivot_root``).

The work happens in a separate helper interpreter (``_nsexec``), so the caller's threads
never meet ``fork``; this module only talks to it over pipes.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coop_build.errors import NamespaceError, ToolError
from coop_build.idmap import IdMap, Mapping3, inside_id, translate

logger = logging.getLogger(__name__)

_UNSAFE_IN_OPTIONS = (",", ":", "\\", "\n")
_STOP_GRACE_S = 10.0
# prestart_helper's helper and the pid that started it (a forked child must not use it)
_spare: tuple[int, subprocess.Popen[bytes]] | None = None


@dataclass(frozen=True)
class RootfsSpec:
    """The overlay a step runs in."""

    lowers: tuple[Path, ...]  # bottom first
    upper: Path  # where this step's writes land
    work: Path  # overlay workdir, same filesystem as upper
    # image = "host": the host's own directories as the lowest layers (``hostlayer``)
    host_dirs: bool = False
    # more read-only binds: (host path, absolute path inside); missing mount points are
    # made in ``upper`` and removed after the step, so no layer keeps them
    binds: tuple[tuple[str, str], ...] = ()


def run_in_rootfs(
    spec: RootfsSpec,
    command: str,
    *,
    env: Mapping[str, str],
    idmap: IdMap,
    output: Callable[[str], None],
    cwd: str = "/",
) -> int:
    """Run ``/bin/sh -c command`` in the rootfs; return its exit code (128+N for signal N).

    stdout and stderr are merged and handed to ``output`` line by line (without the
    newline). ``env`` is the whole environment (PATH gets a default when absent). An
    exception in the caller (KeyboardInterrupt included) kills everything in the
    namespace before it propagates. Raises NamespaceError/ToolError when the namespace
    cannot be set up; a failing command is an exit code, not an exception.
    """
    for path in (*spec.lowers, spec.upper, spec.work):
        _check_layer_path(path)
    for source, target in spec.binds:
        if not (source.startswith("/") and target.startswith("/")):
            raise NamespaceError(f"bind {source} -> {target}: both paths must be absolute")
    request = {
        "mode": "rootfs",
        "lowers": [str(p.resolve()) for p in spec.lowers],
        "upper": str(spec.upper.resolve()),
        "work": str(spec.work.resolve()),
        "host_dirs": spec.host_dirs,
        "binds": [list(pair) for pair in spec.binds],
        "command": command,
        "env": dict(env),
        "cwd": cwd,
        "idmap": _idmap_json(idmap),
    }
    proc = _start_helper(request)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        for raw in proc.stdout:
            output(raw.decode("utf-8", "replace").rstrip("\n"))
        errors = proc.stderr.read().decode("utf-8", "replace")
        code = proc.wait()
    except BaseException:
        _stop_helper(proc)
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
    _raise_helper_errors(errors, code)
    logger.debug("step exited %d: %s", code, command)
    return code


def run_in_userns(argv: Sequence[str], *, idmap: IdMap) -> None:
    """Run a host program as uid 0 of a new user namespace with ``idmap`` (no new root).

    For files that belong to sub-ids on the host (e.g. ``rm -rf`` of a layer built with
    the full mapping). Root's namespaces are coop's id range, which cannot walk root's
    private directories: root works on its trees from the host instead. Raises
    ToolError with the program's output when it fails.
    """
    if not argv:
        raise NamespaceError("run_in_userns needs a program to run")
    proc = _start_helper({"mode": "userns", "argv": list(argv), "idmap": _idmap_json(idmap)})
    try:
        out, err = proc.communicate()
    except BaseException:
        _stop_helper(proc)
        raise
    errors = err.decode("utf-8", "replace")
    _raise_helper_errors(errors, proc.returncode)
    if proc.returncode != 0:
        text = out.decode("utf-8", "replace")
        lines = text.strip().splitlines()
        detail = lines[-1] if lines else f"exit {proc.returncode}"
        raise ToolError(f"{argv[0]} failed in a user namespace: {detail}", tool=argv[0],
                        stderr=text)


def remove_tree(path: Path, idmap: IdMap) -> None:
    """Delete a layer tree; one holding sub-id owned files needs the same id mapping."""
    if not path.exists() and not path.is_symlink():
        return
    if idmap.full and os.geteuid() != 0:
        rm = shutil.which("rm") or "/bin/rm"
        run_in_userns([rm, "-rf", "--", str(path.absolute())], idmap=idmap)
        return
    force_rmtree(path)


def hand_over(paths: Iterable[str | os.PathLike[str]], idmap: IdMap) -> None:
    """Root's namespaces are an unprivileged range: what their root is to write into (a
    step's upper and work dirs, a session's) must be that range's inside 0. A no-op for
    anyone but root."""
    if os.geteuid() == 0:
        uid, gid = idmap.owner
        for path in paths:
            os.chown(path, uid, gid, follow_symlinks=False)


def hand_over_tree(path: Path, idmap: IdMap) -> None:
    """Give a tree host root made (a layer it unpacked, a session's old files) to the
    namespaces of ``idmap``: each owner, read as an inside id, becomes the host id it
    maps to (ids the map lacks become inside 0's); owners that are the map's already stay.
    Set-id bits, which chown clears, are put back. Only root can; for anyone else this
    does nothing (their trees are theirs already).
    """
    if os.geteuid() != 0:
        return
    try:
        for entry in _tree(path):
            st = entry.lstat()
            uid = _handed(st.st_uid, idmap.uid_map, idmap.owner[0])
            gid = _handed(st.st_gid, idmap.gid_map, idmap.owner[1])
            if (uid, gid) == (st.st_uid, st.st_gid):
                continue
            os.chown(entry, uid, gid, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                entry.chmod(stat.S_IMODE(st.st_mode))
    except OSError as exc:
        raise NamespaceError(f"cannot hand {exc.filename or path} to coop's id range: "
                             f"{exc.strerror}") from exc


def _tree(path: Path) -> Iterator[Path]:
    """``path`` and everything below it; symlinks are not followed."""
    yield path
    for top, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            yield Path(top, name)


def _handed(host: int, mapping: Mapping3, fallback: int) -> int:
    if inside_id(mapping, host) is not None:
        return host
    mapped = translate(mapping, host)
    return fallback if mapped is None else mapped


def force_rmtree(path: Path) -> None:
    """shutil.rmtree that also gets through directories we own but made unreadable
    (overlay leaves its ``work/work`` at mode 000)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    try:
        _own_rwx(path)
        for top, dirs, _files in os.walk(path):
            for name in dirs:
                _own_rwx(Path(top, name))
        shutil.rmtree(path)
    except OSError as exc:
        raise NamespaceError(f"cannot remove {exc.filename or path}: {exc.strerror}") from exc


def _own_rwx(directory: Path) -> None:
    st = directory.lstat()
    if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_IRWXU != stat.S_IRWXU:
        directory.chmod(st.st_mode | stat.S_IRWXU)


def _check_layer_path(path: Path) -> None:
    text = str(path.resolve())
    if any(ch in text for ch in _UNSAFE_IN_OPTIONS):
        raise NamespaceError(f"layer path cannot be used in an overlay mount: {text!r}")
    if not path.is_dir():
        raise NamespaceError(f"layer directory does not exist: {path}")


def _idmap_json(idmap: IdMap) -> dict[str, Any]:
    return {"uid_map": [list(x) for x in idmap.uid_map],
            "gid_map": [list(x) for x in idmap.gid_map]}


def prestart_helper() -> int:
    """Start the next step's helper interpreter now, while the caller has other work to do
    (the CLI loading the Coopfile and the build code): its start-up, tens of milliseconds
    of imports, then overlaps that work instead of following it. The next
    ``run_in_rootfs``/``run_in_userns`` of this process hands it its request; one never
    used reads end-of-file when the caller exits (or ``discard_helper``) and ends.
    Returns the waiting helper's pid."""
    global _spare  # noqa: PLW0603  (one per process: a helper waiting for its request)
    if _spare is None or _spare[0] != os.getpid():
        _spare = (os.getpid(), _spawn_helper())
        atexit.unregister(discard_helper)  # once, however many helpers come and go
        atexit.register(discard_helper)
    return _spare[1].pid


def discard_helper() -> None:
    """End a prestarted helper that got no request (closing its stdin ends it)."""
    global _spare
    spare, _spare = _spare, None
    if spare is None or spare[0] != os.getpid():
        return  # none, or a forked child's copy: the parent owns that helper
    proc = spare[1]
    assert proc.stdin is not None
    with contextlib.suppress(OSError):
        proc.stdin.close()
    try:
        proc.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _spawn_helper() -> subprocess.Popen[bytes]:
    package_parent = str(Path(__file__).resolve().parent.parent)  # the dir holding coop_build
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "PYTHONPATH": package_parent,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    try:
        return subprocess.Popen(
            [sys.executable, "-S", "-m", "coop_build._nsexec", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # terminal signals reach the caller, which decides
        )
    except OSError as exc:
        raise NamespaceError(f"cannot start the namespace helper: {exc.strerror}") from exc


def _start_helper(request: dict[str, Any]) -> subprocess.Popen[bytes]:
    """A helper with ``request`` sent: the prestarted one when this process has it (and
    it is still alive), else a new one."""
    global _spare
    spare, _spare = _spare, None
    proc = None
    if spare is not None and spare[0] == os.getpid() and spare[1].poll() is None:
        proc = spare[1]
    elif spare is not None and spare[0] == os.getpid():
        spare[1].communicate()  # died waiting (killed from outside): reap it, start anew
    if proc is None:
        proc = _spawn_helper()
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(request).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # it died already; its stderr says why
    proc.stdin = None  # closed: communicate() must not touch it
    return proc


def _stop_helper(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM makes the helper kill PID 1 (emptying the PID namespace) and clean up."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        logger.warning("namespace helper %d ignored SIGTERM; killing it", proc.pid)
        proc.kill()
        proc.wait()


def _raise_helper_errors(errors: str, code: int) -> None:
    """Turn the helper's JSON error lines (or a crash's traceback) into our exceptions."""
    if not errors.strip():
        return
    for line in errors.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and "error" in item:
            if "tool" in item:
                raise ToolError(str(item["error"]), tool=str(item["tool"]),
                                stderr=str(item.get("stderr", "")))
            if item.get("exec_failed"):
                raise ToolError(str(item["error"]), tool="exec")
            raise NamespaceError(str(item["error"]))
    last = errors.strip().splitlines()[-1]
    raise NamespaceError(f"namespace helper failed (exit {code}): {last}")
