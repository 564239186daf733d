"""Trusting a workspace's Coopfile before it widens the sandbox (SPEC 13, "Coopfile trust").

A workspace ``coop.toml`` comes with the repository the user cloned, like an ``.envrc``:
it is input, not the user's word. Four things in it widen a session beyond coop's
defaults: a ``[workspace].mount`` that resolves (symlinks followed) outside the directory
coop was started in, ``[network].mode = "host"``, ``[env]`` values taken from the user's
environment (``$NAME``), and a ``[network].inherit`` naming more than the user's own
layers give (the mode's default, or the user's own list: the proxy variables may carry
a password, as ``$NAME`` may). A session starts on such a file only once the user said
yes to exactly what it asks (``coop trust``, or the prompt of a create), and only for the
bytes they said yes to. The global layer and the CLI's overrides are the user's own: what
they give is never asked about.

Two halves: ``what_it_asks`` (pure: layer data in, asks out; its only I/O is resolving
paths) and ``TrustStore`` (``COOP_HOME/trust.json``). A leaf: the daemon enforces, the
CLI asks and records, and neither imports the other for it. No pydantic here: the
layers are the raw TOML data (``coop_build.layers.Layer.data``), already validated.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from coop_build.envref import env_reference
from coop_build.inherit import DEFAULT_INHERIT
from coop_run.errors import CoopError
from coop_run.layout import RunLayout, refused_mount
from coop_run.statefiles import locked, read_json, write_json_atomic

logger = logging.getLogger(__name__)

STORE_VERSION = 1
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_WHAT = {
    "mount": "binds {target} into the session read-write (outside the workspace directory)",
    "network": "shares the host's network (its addresses, its loopback services and its "
               "abstract Unix sockets)",
    "env": "passes ${target} from your environment into the session",
    "inherit": "{target}",
}
_SHORT = {"mount": "the mount of {target}", "network": "the host's network",
          "env": "${target}", "inherit": "{target}"}
_INHERITS = {
    "proxy": "passes your proxy variables (with any user:password in them) into the session",
    "tls": "passes your TLS trust variables into the session, the files they name "
           "bound read-only",
}
_INHERIT_SHORT = {"proxy": "your proxy settings", "tls": "your TLS trust settings"}


class Ask(NamedTuple):
    """One thing a workspace Coopfile asks beyond the defaults.

    A plain tuple (kind, key, written, target), so that errors and the wire carry it
    without importing this module.
    """

    kind: str     # "mount", "network", "env" or "inherit"
    key: str      # where the file asks it: "[workspace].mount", "[env].TOKEN"
    written: str  # the value as the file writes it: "../shared", "host", "$AWS_KEY"
    target: str   # what it gets: the mount's real path, "host", the variable's name,
                  # "proxy" or "tls"

    @property
    def grant(self) -> str:
        """What a yes allows, as a trust record keeps it: the same bytes of a file may
        ask for something else later (a symlink on the mount's path that changed)."""
        return f"{self.kind} {self.target}"

    @property
    def line(self) -> str:
        """The ask in full, one line, as the user is shown it (never a variable's value)."""
        target = _INHERITS.get(self.target, self.target) if self.kind == "inherit" else self.target
        what = _WHAT.get(self.kind, "{target}").format(target=_shown(target))
        return f"{self.key} = {_quote(self.written)}: {what}"

    @property
    def short(self) -> str:
        target = (_INHERIT_SHORT.get(self.target, self.target) if self.kind == "inherit"
                  else self.target)
        return _SHORT.get(self.kind, "{target}").format(target=_shown(target))


def resolve_mount(start: Path, written: str) -> Path:
    """``[workspace].mount`` as the session binds it: relative to the directory coop was
    started in, every symlink followed."""
    return Path(os.path.realpath(Path(start) / written))


def what_it_asks(workspace: Mapping[str, Any], *, start: Path,
                 below: Mapping[str, Any] | None = None,
                 above: Mapping[str, Any] | None = None,
                 mount: Path | None = None) -> list[Ask]:
    """What the workspace layer adds beyond what the user's own layers give.

    ``workspace`` is the workspace file's data, ``below`` the global layer's, ``above``
    the CLI overrides' (SPEC 2's order: later wins, ``[env]`` merges key by key). A value
    counts only where the workspace's takes effect and the user's layers alone would not
    have given the same: a global ``network.mode = "host"`` is the user's choice, and a
    workspace that repeats it asks nothing. ``mount``: the mount as already resolved
    (the daemon resolves it once: the path it checks is the path it sends).
    """
    real_start = Path(os.path.realpath(start))
    mine = [layer for layer in (above, below) if layer is not None]
    everyone = [layer for layer in (above, workspace, below) if layer is not None]
    asks: list[Ask] = []

    written = _value(everyone, "workspace", "mount") or "."
    resolved = mount if mount is not None else resolve_mount(real_start, str(written))
    own = resolve_mount(real_start, str(_value(mine, "workspace", "mount") or "."))
    if not resolved.is_relative_to(real_start) and resolved != own:
        asks.append(Ask("mount", "[workspace].mount", str(written), str(resolved)))

    if (_value(everyone, "network", "mode") == "host"
            and _value(mine, "network", "mode") != "host"):
        asks.append(Ask("network", "[network].mode", "host", "host"))

    # What reaches the session against what the user's layers alone would have passed:
    # a workspace that turns the user's "none" into "veth" also turns on veth's default
    # inheritance (the user's proxy credentials), which the user's own mode withheld.
    mode = _value(everyone, "network", "mode") or "veth"
    inherit = _value(everyone, "network", "inherit")
    if inherit is None:
        inherit = list(DEFAULT_INHERIT.get(str(mode), ()))
    granted = _value(mine, "network", "inherit")
    if granted is None:  # what both the session's mode and the user's own mode would give
        user_mode = _value(mine, "network", "mode") or "veth"
        granted = [item for item in DEFAULT_INHERIT.get(str(mode), ())
                   if item in DEFAULT_INHERIT.get(str(user_mode), ())]
    if isinstance(inherit, list):
        for item in dict.fromkeys(str(n) for n in inherit):
            if item not in granted:
                asks.append(Ask("inherit", "[network].inherit", item, item))

    own_names = {env_reference(v) for v in _env(mine).values()} - {None}
    for key, value in _env(everyone).items():
        name = env_reference(value)
        if name is not None and name not in own_names:
            asks.append(Ask("env", f"[env].{_toml_key(key)}", str(value), name))
    return asks


def mount_refusal(start: Path, written: str, coop_home: Path, *,
                  resolved: Path | None = None) -> str | None:
    """The one line refusing a ``[workspace].mount`` no session may have whoever asks
    (``/``, ``/etc``, ``COOP_HOME``...: ``layout.refused_mount``), or None. ``resolved``:
    the mount as already resolved (else resolved here)."""
    if resolved is None:
        resolved = resolve_mount(start, written)
    refusal = refused_mount(resolved, coop_home)
    return None if refusal is None else f"[workspace].mount = {written!r}: {refusal}"


def refusal_message(path: str, shown: str, asks: Sequence[Ask]) -> str:
    """The one line of a refused create: what the file asks, and the command that allows
    it. ``shown`` is the file as the reader would type it; ``path`` (absolute) replaces
    it in the command where the shell would need quotes."""
    items = ", ".join(ask.short for ask in asks)
    argument = shown if shlex.quote(shown) == shown else shlex.quote(path)
    return f"{shown} is not trusted: it asks for {items}; to allow that, run: coop trust {argument}"


def explain(shown: str, asks: Sequence[Ask]) -> list[str]:
    """Everything the file asks, in full, as the user is shown it before saying yes."""
    return [f"{shown} asks for more than coop's defaults:", *(f"  {ask.line}" for ask in asks)]


def trust_key(path: Path) -> str:
    """The file a trust is for: its directory's real path and its name. Not the file's
    own real path: a workspace whose ``coop.toml`` becomes a symlink to a file trusted
    elsewhere is not trusted by that."""
    absolute = Path.cwd() / path
    return str(Path(os.path.realpath(absolute.parent)) / absolute.name)


def _value(layers: Sequence[Mapping[str, Any]], table: str, key: str) -> Any:
    """``[table].key`` of the highest layer that sets it (layers: highest first)."""
    for layer in layers:
        section = layer.get(table)
        if isinstance(section, Mapping) and section.get(key) is not None:
            return section[key]
    return None


def _env(layers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``[env]`` merged key by key (layers: highest first)."""
    merged: dict[str, Any] = {}
    for layer in reversed(layers):
        section = layer.get("env")
        if isinstance(section, Mapping):
            merged.update({str(k): v for k, v in section.items()})
    return merged


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _quote(key)


def _quote(text: str) -> str:
    """A value from the file, double-quoted on one line; escapes for anything a terminal
    would act on (control characters, bidi overrides)."""
    return json.dumps(text, ensure_ascii=not text.isprintable())


def _shown(text: str) -> str:
    return text if text.isprintable() else json.dumps(text)


# --- the trust store ---------------------------------------------------------------


class TrustStore:
    """``COOP_HOME/trust.json``: for each trusted file (``trust_key``) the sha256 of the
    bytes trusted and the grants said yes to. Any other bytes are not trusted: a change
    of the file revokes its trust. Written whole (temp + rename, 0600) under a lock;
    inside a sandbox ``COOP_HOME`` is hidden, so nothing there can trust itself.
    """

    def __init__(self, layout: RunLayout) -> None:
        self.path = layout.trust
        self.lock = layout.trust_lock
        self.home = layout.paths.home

    def trusts(self, file: Path, sha256: str, asks: Iterable[Ask]) -> bool:
        """Whether the user trusted exactly these bytes of ``file`` for every ask."""
        entry = self._files(read_json(self.path)).get(trust_key(file))
        if not isinstance(entry, dict) or entry.get("sha256") != sha256:
            return False
        granted = entry.get("grants")
        if not isinstance(granted, list):
            return False
        return {ask.grant for ask in asks} <= {g for g in granted if isinstance(g, str)}

    def trust(self, file: Path, sha256: str, asks: Iterable[Ask]) -> None:
        """Record the user's yes to ``asks`` for these bytes (replacing any earlier one)."""
        entry = {"sha256": sha256, "grants": sorted({ask.grant for ask in asks}),
                 "trusted": int(time.time())}
        with self._editing() as files:
            files[trust_key(file)] = entry
        logger.info("trusted %s (sha256 %s)", trust_key(file), sha256[:12])

    def revoke(self, file: Path) -> bool:
        """Forget the trust in ``file``; whether there was one."""
        with self._editing() as files:
            found = files.pop(trust_key(file), None) is not None
        return found

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, Any]]:
        """The files table for one change: read under the lock, written back whole
        unless the change failed."""
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        with locked(self.lock):
            try:
                data = read_json(self.path, strict=True)
            except OSError as exc:
                raise CoopError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
            files = self._files(data)
            yield files
            write_json_atomic(self.path, {"version": STORE_VERSION, "files": files})

    @staticmethod
    def _files(data: dict[str, Any] | None) -> dict[str, Any]:
        if data is None or data.get("version") != STORE_VERSION:
            return {}
        files = data.get("files")
        return files if isinstance(files, dict) else {}
