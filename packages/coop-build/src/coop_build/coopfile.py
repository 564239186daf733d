"""The ``coop.toml`` schema (SPEC 2) as frozen pydantic v2 models.

Only the schema and value rules live here; finding, merging and reporting the four layers
is ``coop_build.layers``. Every model forbids unknown keys and is strict (TOML already gives
typed values, so ``"1000"`` for an integer is a mistake worth reporting, not coercing).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from coop_build.errors import InvalidReferenceError
from coop_build.inherit import DEFAULT_INHERIT, INHERIT_NAMES, InheritName
from coop_build.reference import HOST_IMAGE, Reference, parse_reference, parse_repository

SYSTEM_MANAGERS = ("apk", "apt", "dnf", "pacman")
"""Package managers of the distribution; they run before the language managers."""
LANGUAGE_MANAGERS = ("pip", "npm")
KNOWN_MANAGERS = SYSTEM_MANAGERS + LANGUAGE_MANAGERS

NetworkMode = Literal["none", "host", "veth"]

_PLATFORM = re.compile(r"[a-z0-9_]+/[a-z0-9_]+(?:/[a-z0-9_.]+)?", re.ASCII)
_HEX = frozenset("0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\"}


def decode_block_sequence(text: str) -> bytes:
    """Turn an ``input_filter.block_sequences`` entry into the bytes it blocks.

    Escapes: ``\\xNN`` (two hex digits), ``\\r``, ``\\n``, ``\\t``, ``\\\\``; every other
    character stands for its UTF-8 bytes. Raises ``ValueError`` on a bad escape or an
    empty result (an empty sequence would block everything).
    """
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out += ch.encode("utf-8", "surrogatepass")
            i += 1
            continue
        esc = text[i + 1 : i + 2]
        if esc in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[esc]
            i += 2
        elif esc == "x":
            digits = text[i + 2 : i + 4]
            if len(digits) != 2 or not set(digits) <= _HEX:
                raise ValueError(f'invalid escape "\\x{digits}": \\x needs two hex digits')
            out.append(int(digits, 16))
            i += 4
        elif esc == "":
            raise ValueError('ends with a lone "\\" (write \\\\ for a backslash)')
        else:
            raise ValueError(f'invalid escape "\\{esc}" (use \\xNN, \\r, \\n, \\t or \\\\)')
    if not out:
        raise ValueError("must not be empty")
    return bytes(out)


def _quote(text: str) -> str:
    """A user's string in a message: double-quoted, one line, shortened."""
    return json.dumps(text if len(text) <= 60 else text[:60] + "...", ensure_ascii=False)


def _check_block_sequence(text: str) -> str:
    decode_block_sequence(text)
    return text


def _check_image(text: str) -> str:
    if text == HOST_IMAGE:
        return text
    try:
        parse_reference(text)
    except InvalidReferenceError as exc:
        raise ValueError(exc.message) from None
    return text


def _check_repository(text: str) -> str:
    try:
        parse_repository(text)
    except InvalidReferenceError as exc:
        raise ValueError(exc.message) from None
    return text


def _check_platform(text: str) -> str:
    if not _PLATFORM.fullmatch(text):
        raise ValueError(f'must be os/arch[/variant] such as "linux/amd64", got {_quote(text)}')
    return text


def _check_absolute(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError(f"must be an absolute path, got {_quote(text)}")
    return text


def _check_persist_dir(text: str) -> str:
    parts = text.split("/")
    if text.startswith("/"):
        raise ValueError(f"must be a path relative to the sandbox home, got {_quote(text)}")
    if ".." in parts:
        raise ValueError(f'must not contain "..", got {_quote(text)}')
    if not any(part not in ("", ".") for part in parts):
        raise ValueError(f"must name a directory under the sandbox home, got {_quote(text)}")
    return text


NonEmptyStr = Annotated[str, Field(min_length=1)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
ImageName = Annotated[str, AfterValidator(_check_image)]
RepositoryName = Annotated[str, AfterValidator(_check_repository)]
Platform = Annotated[str, AfterValidator(_check_platform)]
AbsolutePath = Annotated[str, AfterValidator(_check_absolute)]
PersistDir = Annotated[str, AfterValidator(_check_persist_dir)]
BlockSequence = Annotated[str, AfterValidator(_check_block_sequence)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class BaseTable(_Table):
    """``[base]``: the image everything is built on, or ``"host"`` for the host's own dirs."""

    image: ImageName = "alpine:3"
    platform: Platform | None = None  # None: the host's os/arch

    @property
    def is_host(self) -> bool:
        return self.image == HOST_IMAGE

    @property
    def reference(self) -> Reference | None:
        """The parsed image reference; ``None`` for ``image = "host"``."""
        return None if self.is_host else parse_reference(self.image)


class SetupTable(_Table):
    """``[setup]``: shell commands run in order at build time, one build step each."""

    run: list[NonEmptyStr] = Field(default_factory=list)


class AgentTable(_Table):
    """``[agent]``: the program on PTY 0; ``command`` is required somewhere in the layers."""

    command: NonEmptyStr
    args: list[str] = Field(default_factory=list)
    install: NonEmptyStr | None = None  # build-time install command, run as the last step


class WorkspaceTable(_Table):
    """``[workspace]``: the host directory bound read-write, and where it appears inside."""

    mount: NonEmptyStr = "."
    path: AbsolutePath = "/workspace"


class NetworkTable(_Table):
    """``[network]``: ``veth`` (NAT, no LAN/host access), ``none`` or ``host``; what the
    session inherits from the invoking environment (``"proxy"``: the proxy variables,
    ``"tls"``: the TLS trust variables with the files they name; unset: the mode's
    ``DEFAULT_INHERIT``)."""

    mode: NetworkMode = "veth"
    inherit: list[InheritName] | None = None

    @property
    def inherited(self) -> tuple[str, ...]:
        """What the session inherits, in ``InheritName`` order, once each."""
        chosen = DEFAULT_INHERIT[self.mode] if self.inherit is None else self.inherit
        return tuple(name for name in INHERIT_NAMES if name in chosen)


class SessionTable(_Table):
    """``[session]``: restart policy, persisted home directories and the default shell."""

    persist: list[PersistDir] = Field(default_factory=lambda: [".claude"])
    auto_restart: bool = True
    restart_delay_ms: int = Field(default=1000, ge=0)
    shell: NonEmptyStr = "/bin/sh"


class InputFilterTable(_Table):
    """``[input_filter]``: extra protection for the agent PTY from web and tunnel clients."""

    ctrl_c_debounce_ms: int = Field(default=500, ge=0)
    block_sequences: list[BlockSequence] = Field(default_factory=list)

    def blocked_bytes(self) -> list[bytes]:
        """The configured sequences decoded to the bytes the filter must match."""
        return [decode_block_sequence(s) for s in self.block_sequences]


class BuildTable(_Table):
    """``[build]``: coop's own addition to SPEC 2, for CI prebuilds.

    ``prebuilt = "REGISTRY/REPO"`` names an image repository (no tag, no digest) where CI
    pushed builds of this Coopfile with ``coop init --push``, each tagged with its build
    key; ``coop init`` pulls the image tagged with the local build key from there instead
    of building, and builds as usual when no such tag exists.
    """

    prebuilt: RepositoryName | None = None

    @property
    def prebuilt_repository(self) -> Reference | None:
        """The parsed repository (``tag`` and ``digest`` ``None``); use ``with_tag(key)``."""
        return None if self.prebuilt is None else parse_repository(self.prebuilt)


class Coopfile(_Table):
    """A complete, merged ``coop.toml``: every table of SPEC 2 plus ``[build]``.

    Tables missing from the files get the defaults of SPEC 2; only ``agent.command`` has
    none. ``packages`` maps a manager name to its packages; unknown managers are kept
    (``layers`` warns about them) and ordered last.
    """

    base: BaseTable = Field(default_factory=BaseTable)
    packages: dict[str, list[NonEmptyStr]] = Field(default_factory=dict)
    setup: SetupTable = Field(default_factory=SetupTable)
    agent: AgentTable
    workspace: WorkspaceTable = Field(default_factory=WorkspaceTable)
    env: dict[EnvName, str] = Field(default_factory=dict)
    network: NetworkTable = Field(default_factory=NetworkTable)
    session: SessionTable = Field(default_factory=SessionTable)
    input_filter: InputFilterTable = Field(default_factory=InputFilterTable)
    build: BuildTable = Field(default_factory=BuildTable)

    def system_packages(self) -> list[tuple[str, list[str]]]:
        """Non-empty system manager lists, in the fixed order apk, apt, dnf, pacman."""
        return [(m, self.packages[m]) for m in SYSTEM_MANAGERS if self.packages.get(m)]

    def language_packages(self) -> list[tuple[str, list[str]]]:
        """pip, then npm, then any unknown managers in file order (non-empty lists only).

        Unknown managers are included so the build can report them; ``layers`` has already
        warned about each.
        """
        known = [(m, self.packages[m]) for m in LANGUAGE_MANAGERS if self.packages.get(m)]
        return known + [(m, p) for m, p in self.packages.items() if p and m not in KNOWN_MANAGERS]

    def unknown_package_managers(self) -> list[str]:
        """Manager keys coop does not know, in file order."""
        return [m for m in self.packages if m not in KNOWN_MANAGERS]

    @property
    def package_count(self) -> int:
        """Total packages over all managers (``coop status``: "alpine:3 + 12 packages")."""
        return sum(len(p) for p in self.packages.values())
