"""Build hook: compile ``csrc/coop-init.c`` (the sandbox's PID 1) into the package, and
ship the repository's ``examples/`` with it.

It runs for wheels and for editable installs (``uv sync``), writing
``src/coop_run/_bin/coop-init``, which git ignores and the wheel carries as an artifact.
A static binary: it is exec'd inside sandboxes whose rootfs has no C library of ours.

``coop init --example NAME`` copies from ``examples/``: the wheel carries that directory
itself as ``coop_run/examples`` (an sdist as ``examples``, for the wheel built from it),
so the packaged examples cannot drift from the repository's. An editable install reads
the checkout's (``coop_run.cli.examples``).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# Warnings are shown, not fatal: a newer compiler must not break an install. `just lint`
# compiles with the same flags (but the link's -static and -s) and -Werror; a test checks
# it does. The init parses what the supervisor sends: stack canaries and glibc's checked
# string and memory calls (fortify needs -O) turn an overrun into an abort, not a hijack.
# -U first: some compilers define _FORTIFY_SOURCE themselves.
FLAGS = ["-static", "-Os", "-s", "-Wall", "-Wextra", "-std=gnu11",
         "-fstack-protector-strong", "-U_FORTIFY_SOURCE", "-D_FORTIFY_SOURCE=2"]


class CoopInitHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        if self.target_name == "sdist":  # the source and the examples, not a binary
            build_data["force_include"][str(_examples(root))] = "examples"
            return
        if self.target_name != "wheel":
            return
        if version != "editable":
            build_data["force_include"][str(_examples(root))] = "coop_run/examples"
        source = root / "csrc" / "coop-init.c"
        target = root / "src" / "coop_run" / "_bin" / "coop-init"
        target.parent.mkdir(exist_ok=True)
        partial = target.with_name(f".coop-init.{os.getpid()}")
        argv = [*shlex.split(os.environ.get("CC", "cc")), *FLAGS, "-o", str(partial), str(source)]
        try:
            subprocess.run(argv, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", None) or str(exc)
            raise RuntimeError(
                "coop-run: cannot compile its sandbox init (needs a C compiler and a static "
                f"libc: apt-get install gcc libc6-dev): {shlex.join(argv)}\n{detail}") from exc
        partial.replace(target)
        build_data["artifacts"].append("src/coop_run/_bin/coop-init")
        build_data["pure_python"] = False
        build_data["infer_tag"] = True


def _examples(root: Path) -> Path:
    """``examples/``: of an unpacked sdist, or of the repository (a checkout)."""
    for candidate in (root / "examples", root.parent.parent / "examples"):
        if (candidate / "quickstart" / "coop.toml").is_file():
            return candidate
    raise RuntimeError(f"coop-run: no examples/ next to {root} (../../examples in a checkout, "
                       "./examples in an sdist)")
