"""Session directories (``~/.coop/sessions/<name>/``), their state file, and bind safety.

A running sandbox keeps ``upper/`` and ``work/`` (the overlay's writable half), ``root/``
(the empty mount point of the overlay), ``etc/`` (generated hostname, hosts, resolv.conf,
bound read-only inside so they never land in any layer), with ``image = "host"``
``host/`` (the writable halves of the overlays at the host's directories) and
``persist/`` (kept across sessions). ``sandbox.json`` records who owns them: the
creating process while starting, then the init. Sessions outlive whoever started them,
so nothing is tied to the creator's life; instead the next start calls
``reap_stale()``, which removes what belongs to sandboxes whose recorded process is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from coop_build.errors import CoopBuildError, NamespaceError
from coop_build.idmap import IdMap
from coop_build.namespace import force_rmtree, hand_over, hand_over_tree, remove_tree
from coop_build.paths import CoopPaths
from coop_run.errors import BindPathError, SandboxError
from coop_run.layout import TRANSIENT, RunLayout, SessionDir, check_session_name
from coop_run.procs import alive
from coop_run.sandbox.network.modes import reap_stale as reap_network
from coop_run.statefiles import locked, read_json

logger = logging.getLogger(__name__)

BLANK = "blank"  # in etc/: the empty file bound read-only over the host's secret files



def session_dir(paths: CoopPaths, name: str) -> SessionDir:
    """``sessions/<name>`` under ``COOP_HOME``; ``name`` must be a plain, safe name."""
    check_session_name(name)
    return RunLayout(paths).session(name)



def check_bind_source(path: Path, *, home: Path, workspace: Path,
                      allowed: Iterable[Path] = ()) -> Path:
    """The real path of ``path`` if it lies inside ``home``, ``workspace`` (or one of
    ``allowed``, for coop's own directories); else BindPathError naming both paths."""
    real = _real_path(path, "bind source")
    roots = [home, workspace, *allowed]
    for root in roots:
        try:
            real_root = root.resolve()
        except (OSError, RuntimeError):
            continue
        if real == real_root or real.is_relative_to(real_root):
            return real
    shown = f"{path} (-> {real})" if real != path.absolute() else str(path)
    raise BindPathError(
        f"refusing to bind {shown}: it is outside your home and the workspace"
    )


def check_resolved(path: Path, what: str) -> Path:
    """``path`` if it is the real path of an existing directory (what the daemon
    resolved and checked: the caller then opens it once, ``mountfds.open_workspace``),
    else BindPathError: a path that resolves elsewhere was changed after the check."""
    real = _real_path(path, what)
    if real != path:
        raise BindPathError(f"refusing to bind {what} {path}: it resolves to {real}, "
                            "not to the directory checked")
    if not real.is_dir():
        raise BindPathError(f"refusing to bind {what} {path}: not a directory")
    return real


def _real_path(path: Path, what: str) -> Path:
    """The real path of the existing ``path``, else BindPathError naming it as ``what``."""
    try:
        return path.resolve(strict=True)
    except FileNotFoundError:
        raise BindPathError(f"{what} {path} does not exist") from None
    except (OSError, RuntimeError) as exc:
        raise BindPathError(f"{what} {path} cannot be resolved: {exc}") from None


# --- state file ------------------------------------------------------------------------



def state_owner_alive(state: dict[str, Any]) -> bool:
    """Whether the process that owns the session's files (init, else creator) lives."""
    init = state.get("init")
    if isinstance(init, dict):
        return alive(init.get("pid"), init.get("start"))
    creator = state.get("creator")
    if isinstance(creator, dict):
        return alive(creator.get("pid"), creator.get("start"))
    return False


def idmap_from_state(state: dict[str, Any]) -> IdMap | None:
    raw = state.get("idmap")
    if not isinstance(raw, dict):
        return None
    try:
        return IdMap(uid_map=tuple((int(a), int(b), int(c)) for a, b, c in raw["uid_map"]),
                     gid_map=tuple((int(a), int(b), int(c)) for a, b, c in raw["gid_map"]))
    except (KeyError, TypeError, ValueError):
        return None


def idmap_to_state(idmap: IdMap) -> dict[str, Any]:
    return {"uid_map": [list(x) for x in idmap.uid_map],
            "gid_map": [list(x) for x in idmap.gid_map]}


def clean_transient(sdir: SessionDir, idmap: IdMap | None) -> None:
    """Remove everything of a session except ``persist/`` (and the dir if then empty)."""
    clean_leftovers(sdir, idmap)
    sdir.sandbox_state.unlink(missing_ok=True)
    # With no state left there is nothing to claim: a start waiting on this lock file
    # takes the new one (``statefiles.locked``), a reaper skips a directory with no state.
    sdir.lock.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        sdir.path.rmdir()  # only when nothing (no persist/, no supervisor files) is left


def clean_leftovers(sdir: SessionDir, idmap: IdMap | None) -> None:
    """Remove the transient directories (upper, work, ...) but not the state file.

    Usually everything in them is the user's own, and a plain delete takes milliseconds;
    only files a session chowned to sub-ids need a namespace with the same mapping
    (``remove_tree``: a helper process, about 100 ms), so that is the fallback.
    """
    for name in TRANSIENT:
        path = sdir.path / name
        try:
            path.lstat()  # one call for a missing entry (most are, on a session's start)
        except FileNotFoundError:
            continue
        try:
            try:
                force_rmtree(path)
            except NamespaceError:
                if idmap is None or not idmap.full:
                    raise
                remove_tree(path, idmap)
        except CoopBuildError as exc:
            raise SandboxError(f"cannot remove {path}: {exc.message}") from exc


def claimed(sdir: SessionDir, *, wait: bool = True) -> contextlib.AbstractContextManager[bool]:
    """Hold the session directory's lock (``flock`` on ``.lock``): a start holds it from
    reading the state to writing its own, a reaper from reading a dead state to cleaning,
    so neither acts on what the other is changing. A start waits (and makes the directory
    again if the reaper it waited for removed it); a reaper (``wait=False``) gets False
    instead of waiting."""
    return locked(sdir.lock, wait=wait, make_dir=wait)


def reap_stale_in(sessions: Path) -> list[str]:
    """Clean the transient files of every session under ``sessions`` whose owning
    process is gone; the names cleaned. A session being started right now (its lock
    held) is left to its starter."""
    cleaned: list[str] = []
    try:
        entries = sorted(e for e in sessions.iterdir() if e.is_dir())
    except FileNotFoundError:
        entries = []
    for entry in entries:
        sdir = SessionDir(entry)
        if not sdir.sandbox_state.exists():
            continue  # nothing recorded (persist/ only): nothing to clean, nor to lock
        with claimed(sdir, wait=False) as ours:
            state = read_json(sdir.sandbox_state) if ours else None
            if state is None or state_owner_alive(state):
                continue
            logger.info("removing leftovers of dead sandbox %s", entry.name)
            try:
                clean_transient(sdir, idmap_from_state(state))
            except SandboxError as exc:
                logger.warning("%s", exc.message)
                continue
        cleaned.append(entry.name)
    return cleaned


def reap_stale(paths: CoopPaths,
               network_reap: Callable[[CoopPaths], None] = reap_network) -> list[str]:
    """``reap_stale_in(paths.sessions)``, then what dead sessions' network modes left
    (``network_reap``: tests pass their own)."""
    cleaned = reap_stale_in(paths.sessions)
    network_reap(paths)
    return cleaned


def persist_name_ok(name: str) -> bool:
    """A persist entry is a relative path below $HOME without '..' or empty parts."""
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and all(
        p not in ("", ".", "..") for p in parts) and "\0" not in name


def ensure_dirs(sdir: SessionDir, *, idmap: IdMap | None = None, blank: bool = False) -> None:
    """Create the session's fresh directories (upper/work/root/etc; the persist ones come
    later, ``Sandbox._finish_dirs``), and with ``blank`` the empty file bound read-only
    over the host's secret files (``BLANK``). With ``idmap`` (root's: coop's id range),
    what the sandbox's root writes into is handed to it."""
    sdir.path.mkdir(parents=True, exist_ok=True)
    sdir.path.chmod(0o700)
    for path in (sdir.upper, sdir.work, sdir.root, sdir.etc):
        path.mkdir()
    if blank:
        os.close(os.open(sdir.etc / BLANK, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         0o444))
    if idmap is not None:
        hand_over([sdir.upper, sdir.work], idmap)


def ensure_host_dirs(sdir: SessionDir, count: int, idmap: IdMap | None) -> None:
    """image = "host": ``host/upperN`` and ``host/workN`` for ``count`` host directories
    (``coop_build.hostlayer``), handed to root's range as the session's upper is."""
    sdir.host.mkdir()
    made = []
    for index in range(count):
        made += [sdir.host / f"upper{index}", sdir.host / f"work{index}"]
        made[-2].mkdir()
        made[-1].mkdir()
    if idmap is not None:
        hand_over(made, idmap)


def give_persist(path: Path, idmap: IdMap) -> None:
    """A persist directory is the sandbox's root's to write: root's belong to coop's id
    range. One of host root (just made, or left by a coop that ran root's sandboxes as
    host root) is handed over whole, once."""
    if path.lstat().st_uid == 0 and idmap.owner[0] != 0:
        logger.debug("handing %s to coop's id range", path)
        hand_over_tree(path, idmap)
