"""The build plan: the ordered steps of a Coopfile and their chained cache keys.

Pure code, no network: a step's key is ``sha256`` over a format version, the parent
step's key and the step's canonical JSON definition, so an unchanged Coopfile yields the
same keys on any machine (CI prebuilds match local builds) and changing one step changes
only its key and those after it. The build key is the last step's key.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from coop_build.coopfile import KNOWN_MANAGERS, Coopfile
from coop_build.hostlayer import SKELETON_FORMAT
from coop_build.packages import install_command
from coop_build.reference import HOST_IMAGE, parse_reference

logger = logging.getLogger(__name__)

STEP_FORMAT = 1
"""Bump when what a step produces changes for the same definition: every key changes."""

StepKind = Literal["base", "packages", "setup", "install"]


@dataclass(frozen=True)
class Step:
    """One build step: what the CLI shows, what it does, and its cache key."""

    kind: StepKind
    description: str  # shown as "[i/N] description"
    definition: Mapping[str, Any] = field(hash=False)  # canonical, JSON-able
    key: str

    @property
    def command(self) -> str | None:
        """The shell command run inside the rootfs; ``None`` for the base step."""
        value = self.definition.get("command")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class BuildPlan:
    """Every step of a Coopfile's build, bottom to top, and what the build record needs."""

    steps: tuple[Step, ...]
    build_key: str
    image: str  # base.image as written ("host" for the host image)
    platform: str
    host: bool
    package_count: int
    system: str = ""  # image = "host": the host's ``hostlayer.system_identity``


def canonical_json(value: Any) -> str:
    """The one JSON spelling of ``value`` that keys are hashed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def step_key(parent: str, definition: Mapping[str, Any]) -> str:
    """``sha256`` hex of the format version, the parent key and the definition."""
    payload = canonical_json({"format": STEP_FORMAT, "parent": parent, "step": definition})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def plan_steps(coopfile: Coopfile, *, platform: str, single_idmap: bool,
               host_system: str = "") -> BuildPlan:
    """The build plan of a merged Coopfile for ``platform``.

    ``single_idmap`` is part of the package steps' definitions because apt needs a
    different command when only one id is mapped. ``host_system`` keys the host image's
    base (its skeleton is the host's directories: ``hostlayer``); the platform does not,
    nor does anything else of the machine. Unknown package managers were already warned
    about when loading; they are skipped.
    """
    image = coopfile.base.image
    host = image == HOST_IMAGE
    entries: list[tuple[StepKind, str, dict[str, Any]]] = []
    if host:
        base = {"kind": "base", "image": HOST_IMAGE, "system": host_system,
                "skeleton": SKELETON_FORMAT}
        entries.append(("base", f"image {HOST_IMAGE}", base))
    else:
        base_def = {"kind": "base", "image": str(parse_reference(image)), "platform": platform}
        entries.append(("base", f"image {image} ({platform})", base_def))

    package_count = 0
    for manager, names in [*coopfile.system_packages(), *coopfile.language_packages()]:
        if manager not in KNOWN_MANAGERS:
            logger.info("skipping packages of unknown manager %r", manager)
            continue
        command = install_command(manager, names, single_idmap=single_idmap)
        package_count += len(names)
        definition = {
            "kind": "packages",
            "manager": manager,
            "packages": list(names),
            "command": command,
        }
        entries.append(("packages", f"{manager} install {' '.join(names)}", definition))

    for command in coopfile.setup.run:
        entries.append(("setup", command, {"kind": "setup", "command": command}))
    if coopfile.agent.install:
        install = coopfile.agent.install
        entries.append(("install", install, {"kind": "install", "command": install}))

    steps: list[Step] = []
    parent = ""
    for kind, description, definition in entries:
        key = step_key(parent, definition)
        steps.append(Step(kind=kind, description=description, definition=definition, key=key))
        parent = key
    return BuildPlan(
        steps=tuple(steps),
        build_key=parent,
        image=image,
        platform=platform,
        host=host,
        package_count=package_count,
        system=host_system if host else "",
    )
