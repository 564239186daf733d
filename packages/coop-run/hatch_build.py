"""Build hook: compile ``csrc/coop-init.c`` (the sandbox's PID 1) into the package.

It runs for wheels and for editable installs (``uv sync``), writing
``src/coop_run/_bin/coop-init``, which git ignores and the wheel carries as an artifact.
A static binary: it is exec'd inside sandboxes whose rootfs has no C library of ours.
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
        if self.target_name != "wheel":  # an sdist ships the source, not a binary
            return
        root = Path(self.root)
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
