"""What a session's network made, recorded in ``sessions/<name>/network.json``.

The record names the owner process (pid + start time, so a reused pid is not mistaken
for the owner) and every kernel object or helper process, so ``reap_stale`` can remove
them after the owner died without guessing.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from coop_build.paths import CoopPaths
from coop_run.errors import NetworkError
from coop_run.layout import NETWORK_STATE, RunLayout
from coop_run.procs import proc_start_time
from coop_run.statefiles import locked, write_text_atomic

STATE_VERSION = 1


@dataclass
class NetState:
    """One session's network record."""

    mode: str
    session: str
    owner_pid: int
    owner_start: int
    slot: int | None = None
    link: str | None = None
    table: str | None = None
    helper_pid: int | None = None
    helper_start: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_current_process(cls, mode: str, session: str) -> NetState:
        pid = os.getpid()
        start = proc_start_time(pid)
        if start is None:
            raise NetworkError("cannot read our own /proc/self/stat")
        return cls(mode=mode, session=session, owner_pid=pid, owner_start=start)

    def to_json(self) -> str:
        return json.dumps({"version": STATE_VERSION, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NetState:
        """Parses a record; anything malformed is a ``NetworkError``."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NetworkError(f"network state is not JSON: {exc.msg}") from exc
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise NetworkError("network state has an unknown version")

        def opt_int(key: str) -> int | None:
            value = data.get(key)
            if value is None or (isinstance(value, int) and not isinstance(value, bool)):
                return value
            raise NetworkError(f"network state: {key} is not an integer")

        def opt_str(key: str) -> str | None:
            value = data.get(key)
            if value is None or isinstance(value, str):
                return value
            raise NetworkError(f"network state: {key} is not a string")

        mode, session = opt_str("mode"), opt_str("session")
        owner_pid, owner_start = opt_int("owner_pid"), opt_int("owner_start")
        if mode is None or session is None or owner_pid is None or owner_start is None:
            raise NetworkError("network state lacks mode, session or owner")
        extra = data.get("extra", {})
        if not isinstance(extra, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
        ):
            raise NetworkError("network state: extra is not a string map")
        return cls(mode=mode, session=session, owner_pid=owner_pid, owner_start=owner_start,
                   slot=opt_int("slot"), link=opt_str("link"), table=opt_str("table"),
                   helper_pid=opt_int("helper_pid"), helper_start=opt_int("helper_start"),
                   extra=extra)


def state_path(paths: CoopPaths, session: str) -> Path:
    return RunLayout(paths).session(session).network_state


def write_state(paths: CoopPaths, state: NetState) -> None:
    """Writes the record atomically (rename), creating the session directory if needed."""
    path = state_path(paths, state.session)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, state.to_json())


def remove_state(paths: CoopPaths, session: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path(paths, session).unlink()


def all_states(paths: CoopPaths) -> Iterator[tuple[Path, NetState | None]]:
    """Every record under ``sessions/``; None for an unreadable one."""
    try:
        files = sorted(paths.sessions.glob(f"*/{NETWORK_STATE}"))
    except OSError:
        return
    for path in files:
        try:
            yield path, NetState.from_json(path.read_text())
        except (OSError, NetworkError):
            yield path, None


@contextlib.contextmanager
def network_lock(paths: CoopPaths) -> Iterator[None]:
    """Serialises address allocation and reaping within one ``COOP_HOME``."""
    with locked(RunLayout(paths).network_lock, make_dir=True):
        yield
