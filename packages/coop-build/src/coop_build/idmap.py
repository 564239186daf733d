"""Which uids/gids a namespace (a build step's, a sandbox's) maps, and writing those maps.

For a plain user, inside id 0 is the invoking user. When the user owns a subordinate
range in ``/etc/subuid`` and ``/etc/subgid`` (and the setuid ``newuidmap``/``newgidmap``
helpers to apply it), inside ids 1..N map to that range, so package managers that chown
files to system users work. Otherwise only the single id is mapped.

Root is no stronger than a user: its inside ids 0..65535 map to coop's own reserved
range (``subids``), never to host uid 0, so nothing in a namespace root starts has host
root's file powers.

``COOP_IDMAP=single`` forces the single mapping (inside 0 only; tests use it; so can a
user whose range is shared with something else).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from coop_build import subids
from coop_build.errors import NamespaceError, ToolError

logger = logging.getLogger(__name__)

Mapping3 = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class IdMap:
    """uid and gid maps as the kernel takes them: (inside, outside, count) lines."""

    uid_map: Mapping3
    gid_map: Mapping3

    @classmethod
    def single(cls, uid: int, gid: int) -> IdMap:
        """Inside 0 -> ``uid``/``gid``; nothing else mapped."""
        return cls(uid_map=((0, uid, 1),), gid_map=((0, gid, 1),))

    @property
    def full(self) -> bool:
        """More than the single id is mapped (files may belong to sub-ids on the host)."""
        return sum(c for _, _, c in self.uid_map) > 1 or sum(c for _, _, c in self.gid_map) > 1

    def host_uid(self, inside: int) -> int | None:
        """The host uid that inside uid ``inside`` is, or None when unmapped."""
        return translate(self.uid_map, inside)

    def host_gid(self, inside: int) -> int | None:
        """The host gid that inside gid ``inside`` is, or None when unmapped."""
        return translate(self.gid_map, inside)

    @property
    def owner(self) -> tuple[int, int]:
        """The host (uid, gid) of inside 0: what the namespace's root creates is theirs."""
        uid, gid = self.host_uid(0), self.host_gid(0)
        if uid is None or gid is None:
            raise NamespaceError("an id map must map inside id 0")
        return uid, gid


def translate(mapping: Mapping3, inside: int) -> int | None:
    """The outside id that ``inside`` is under ``mapping``; None when unmapped."""
    for first, outside, count in mapping:
        if first <= inside < first + count:
            return outside + inside - first
    return None


def inside_id(mapping: Iterable[Sequence[int]], host: int) -> int | None:
    """The inside id that host id ``host`` is under ``mapping`` (the reverse of
    ``translate``); None when the map does not reach it."""
    for first, outside, count in mapping:
        if outside <= host < outside + count:
            return first + host - outside
    return None


def format_map(mapping: Mapping3) -> str:
    """The text written to ``/proc/PID/uid_map``: one ``inside outside count`` line each."""
    return "".join(f"{a} {b} {c}\n" for a, b, c in mapping)


def parse_subid(
    text: str, *, names: tuple[str, ...], source: str = "subid"
) -> list[tuple[int, int]]:
    """The (start, count) ranges that ``/etc/subuid``-format ``text`` gives ``names``.

    ``names`` holds the user's name and decimal uid (either may appear in the file).
    Malformed lines of other users are skipped (they are not ours to judge); a malformed
    line of this user is an error naming the file and line.
    """
    ranges: list[tuple[int, int]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if fields[0] not in names:
            continue
        parsed = _parse_range(fields)
        if parsed is None:
            raise NamespaceError(f"{source}:{number}: expected NAME:START:COUNT, got {line!r}")
        if parsed[1]:
            ranges.append(parsed)
    return ranges


def _parse_range(fields: list[str]) -> tuple[int, int] | None:
    if len(fields) != 3 or not fields[1].isdigit() or not fields[2].isdigit():
        return None
    return int(fields[1]), int(fields[2])


def build_full_map(own: int, ranges: list[tuple[int, int]]) -> Mapping3:
    """Inside 0 -> ``own``, then inside 1.. -> each range in turn (ranges holding ``own``
    are dropped: the kernel refuses overlapping outside ids)."""
    lines: list[tuple[int, int, int]] = [(0, own, 1)]
    inside = 1
    for start, count in ranges:
        if start <= own < start + count:
            continue
        lines.append((inside, start, count))
        inside += count
    return tuple(lines)


def choose_idmap(  # noqa: PLR0917 (the documented signature)
    uid: int | None = None,
    gid: int | None = None,
    user: str | None = None,
    subuid_path: str | os.PathLike[str] = "/etc/subuid",
    subgid_path: str | os.PathLike[str] = "/etc/subgid",
    environ: Mapping[str, str] | None = None,
) -> IdMap:
    """The maps a build namespace should get for this user (see the module docstring)."""
    env = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    if user is None:
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = None
    mode = env.get("COOP_IDMAP", "auto") or "auto"
    if mode not in ("auto", "single"):
        raise NamespaceError(f"COOP_IDMAP must be 'auto' or 'single', got {mode!r}")
    if uid == 0:
        return root_idmap(Path(subuid_path), Path(subgid_path), single=mode == "single")
    single = IdMap.single(uid, gid)
    if mode == "single":
        return single
    names = (str(uid),) if user is None else (user, str(uid))
    uid_ranges = _read_ranges(Path(subuid_path), names)
    gid_ranges = _read_ranges(Path(subgid_path), names)
    if not uid_ranges or not gid_ranges:
        return single
    path = env.get("PATH", os.defpath)
    if not (shutil.which("newuidmap", path=path) and shutil.which("newgidmap", path=path)):
        logger.info("subordinate ids found but newuidmap/newgidmap missing: single mapping")
        return single
    return IdMap(uid_map=build_full_map(uid, uid_ranges), gid_map=build_full_map(gid, gid_ranges))


# The files root's maps are judged from (besides the two named): accounts (``subids``).
_ACCOUNT_FILES = (Path("/etc/passwd"), Path("/etc/group"))
# (subuid, subgid, single) -> (the files' stat signature, the maps judged from them)
_root_maps: dict[tuple[Path, Path, bool], tuple[tuple[object, ...], IdMap]] = {}


def root_idmap(subuid: Path, subgid: Path, *, single: bool = False) -> IdMap:
    """Root's maps: inside 0..65535 (inside 0 alone with ``single``) to coop's range,
    reserved in ``subuid``/``subgid`` on first use (``subids``).

    Judged again whenever one of the files it was judged from changes (``_signature``),
    else taken from the last judgment: the account database read through NSS costs
    about a millisecond of every root start."""
    key = (subuid, subgid, single)
    signature = _signature((subuid, subgid, *_ACCOUNT_FILES))
    known = _root_maps.get(key)
    if known is not None and known[0] == signature:
        return known[1]
    (ustart, ucount), (gstart, gcount) = subids.coop_ranges(subuid, subgid)
    if single:
        idmap = IdMap.single(ustart, gstart)
    else:
        idmap = IdMap(uid_map=((0, ustart, min(ucount, subids.BLOCK)),),
                      gid_map=((0, gstart, min(gcount, subids.BLOCK)),))
    # The signature read before the judgment: a change made meanwhile (our own
    # reservation included) makes the next call judge again.
    _root_maps[key] = (signature, idmap)
    return idmap


def _signature(paths: Iterable[Path]) -> tuple[object, ...]:
    """What changes when any of ``paths`` is written, replaced, created or removed."""
    marks: list[object] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            marks.append(None)
            continue
        marks.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(marks)


def _read_ranges(path: Path, names: tuple[str, ...]) -> list[tuple[int, int]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        logger.info("cannot read %s (%s): single mapping", path, exc.strerror)
        return []
    return parse_subid(text, names=names, source=str(path))


def write_idmap(pid: int, idmap: IdMap) -> None:
    """Give process ``pid`` (just after its ``unshare(CLONE_NEWUSER)``) its maps.

    Root writes ``/proc/PID/{uid,gid}_map`` itself. A plain user applies a full map with
    ``newuidmap``/``newgidmap``; for the single map it may write its own id directly, but
    only after denying ``setgroups`` (the kernel's rule for unprivileged gid maps).
    """
    proc = Path(f"/proc/{pid}")
    if os.geteuid() == 0:
        _write_proc(proc / "uid_map", format_map(idmap.uid_map))
        _write_proc(proc / "gid_map", format_map(idmap.gid_map))
        return
    if idmap.full:
        _run_map_tool("newgidmap", pid, idmap.gid_map)
        _run_map_tool("newuidmap", pid, idmap.uid_map)
        return
    _write_proc(proc / "setgroups", "deny")
    _write_proc(proc / "gid_map", format_map(idmap.gid_map))
    _write_proc(proc / "uid_map", format_map(idmap.uid_map))


def _write_proc(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise NamespaceError(
            f"cannot write {path} ({text.strip()!r}): {exc.strerror}"
        ) from exc


def _run_map_tool(tool: str, pid: int, mapping: Mapping3) -> None:
    exe = shutil.which(tool)
    if exe is None:
        raise ToolError(f"{tool} is not installed (apt-get install uidmap)", tool=tool)
    argv = [exe, str(pid)] + [str(v) for line in mapping for v in line]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()
        raise ToolError(
            f"{tool} {pid} failed: {detail[-1] if detail else f'exit {result.returncode}'}",
            tool=tool,
            stderr=result.stderr,
        )
