#!/usr/bin/env python3
"""Prebuild a coop environment in CI and push it to an OCI registry.

Uses only the coop_build library (no daemon, no `coop` CLI), as a CI job would:

    python prebuild.py --file coop.toml --push registry.example.com/team/env:main

The image is tagged with the build key (and with the tag of --push, if any). Developers
whose Coopfile says ``[build] prebuilt = "registry.example.com/team/env"`` then get this
environment from `coop init` without building, as long as their Coopfile matches.
The last line on stdout is a JSON summary for the next CI step.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from coop_build.api import (
    Builder,
    BuildOptions,
    CoopBuildError,
    LayerProgress,
    Message,
    ProgressEvent,
    StepFinished,
    StepStarted,
    default_paths,
    load_coopfile,
)

log = logging.getLogger("prebuild")


def report(event: ProgressEvent) -> None:
    """Progress as plain log lines: CI logs are not terminals."""
    if isinstance(event, StepStarted):
        log.info("[%d/%d] %s", event.index, event.total, event.description)
    elif isinstance(event, StepFinished):
        state = "cached" if event.cached else f"{event.elapsed:.1f}s"
        log.info("[%d/%d] done (%s)", event.index, event.total, state)
    elif isinstance(event, Message):
        log.info("%s", event.text)
    elif isinstance(event, LayerProgress) and event.done == event.total:
        log.info("layer %s: %d bytes%s", event.digest[:19], event.total,
                 " (cached)" if event.cached else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", "-f", type=Path, default=None,
                        help="the Coopfile (default: ./coop.toml)")
    parser.add_argument("--workspace", type=Path, default=Path.cwd(),
                        help="the workspace the Coopfile belongs to (default: .)")
    parser.add_argument("--push", required=True, metavar="REF",
                        help="REGISTRY/REPO[:TAG] to push the built environment to")
    parser.add_argument("--no-cache", action="store_true", help="rebuild every step")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    try:
        loaded = load_coopfile(args.file, workspace=args.workspace)
        for warning in loaded.warnings:
            log.warning("%s", warning)
        builder = Builder(default_paths())
        result = builder.build(
            loaded,
            args.workspace,
            BuildOptions(push=args.push, no_cache=args.no_cache, progress=report),
        )
    except CoopBuildError as exc:
        log.error("prebuild failed (%s): %s", exc.code, exc)
        return 1
    print(json.dumps({
        "build_key": result.build_key,
        "pushed": result.pushed,
        "steps_run": result.steps_run,
        "steps_total": result.steps_total,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
