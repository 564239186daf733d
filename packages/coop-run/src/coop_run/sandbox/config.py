"""What a sandbox is made of (pure): built by the daemon, carried to the supervisor in
the launch request (``coop_run.session.launch``), used by ``coop_run.sandbox.host``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from coop_build.idmap import IdMap
from coop_run.sandbox.network.base import NetworkMode


@dataclass
class SandboxConfig:
    """Everything a sandbox is made of. ``env`` is already ``$VAR``-expanded."""

    name: str                                  # session name = hostname
    layers: Sequence[Path]                     # build layer dirs, bottom first
    session_dir: Path                          # ~/.coop/sessions/<name>
    workspace: Path                            # host path, bound read-write
    workspace_inside: str = "/workspace"
    host_image: bool = False                   # image = "host"
    persist: Sequence[str] = ()                # dirs under $HOME kept across sessions
    home: str = "/root"                        # $HOME inside
    env: Mapping[str, str] = field(default_factory=dict)
    network: NetworkMode | None = None         # None: "none"
    idmap: IdMap | None = None                 # None: choose_idmap()
    user_home: Path | None = None              # for bind checks; None: $HOME
    created: int | None = None                 # COOP_CREATED; None: now
    hide: Sequence[Path] = ()                  # host dirs never visible inside (COOP_HOME)
    # inherited ([network] inherit): the TLS trust files (host real path, path inside, is
    # a directory), bound read-only; the proxies' (IPv4 address, TCP port) a veth opens
    readonly_binds: Sequence[tuple[str, str, bool]] = ()
    proxies: Sequence[tuple[str, int]] = ()
