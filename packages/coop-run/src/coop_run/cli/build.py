"""``coop init`` and ``coop rebuild``: build the workspace's rootfs (SPEC 3, seed 11.3).

coop_build does the work; this module only turns options into a build call, renders its
progress, and prints a one-line summary.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from coop_build.paths import display_path
from coop_run.cli.app import App
from coop_run.cli.examples import (
    check_example,
    complete_example,
    require_coopfile,
    write_example,
)
from coop_run.cli.options import global_options

if TYPE_CHECKING:
    from coop_build.build import BuildResult
    from coop_build.layers import LoadedCoopfile

logger = logging.getLogger(__name__)

_FILE_OPTION = click.option(
    "-f",
    "--file",
    "coopfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Coopfile path (default: ./coop.toml).",
)


def load(app: App, coopfile: Path | None) -> LoadedCoopfile:
    """Read and merge the Coopfile layers, printing their warnings (SPEC 2)."""
    from coop_build.layers import load_coopfile

    loaded = load_coopfile(
        coopfile,
        workspace=app.workspace,
        global_path=app.global_config,
        environ=app.environ,
    )
    for warning in loaded.warnings:
        app.warn(warning.removeprefix("warning: "))
    return loaded


def run_build(
    app: App,
    coopfile: Path | None,
    *,
    no_cache: bool,
    push: str | None = None,
    prebuilt: str | None = None,
) -> BuildResult:
    """Build the workspace's rootfs, rendering progress as ``-q``/``-v`` ask."""
    if prebuilt is None:
        # A step is likely to run: its namespace helper starts now, alongside the imports
        # and the Coopfile loading below (about 60 ms of the smallest rebuild otherwise).
        from coop_build.namespace import prestart_helper

        prestart_helper()
    from coop_build.build import Builder, BuildOptions
    from coop_build.progress import ignore_progress
    from coop_run.cli.progress import ProgressRenderer

    loaded = load(app, coopfile)
    renderer = None
    if not app.quiet:
        width = shutil.get_terminal_size().columns if app.tty else None
        renderer = ProgressRenderer(app.out, tty=app.tty, verbose=app.verbose, width=width)
    options = BuildOptions(
        no_cache=no_cache,
        prebuilt=prebuilt,
        push=push,
        progress=renderer if renderer is not None else ignore_progress,
        platform=None,
    )
    started = time.monotonic()
    try:
        result = Builder(app.paths, environ=dict(app.environ)).build(
            loaded, app.workspace, options
        )
    finally:
        if renderer is not None:
            renderer.close()
    _summarise(app, result, time.monotonic() - started)
    return result


def _summarise(app: App, result: BuildResult, elapsed: float) -> None:
    from coop_run.cli.progress import format_duration

    key = result.build_key[:12]
    if result.from_prebuilt:
        app.echo(f"Rootfs {key} ready: pulled prebuilt image in {format_duration(elapsed)}")
    elif result.steps_run == 0:
        app.echo(f"Nothing to do: rootfs {key} is up to date")
    else:
        app.echo(
            f"Rootfs {key} built: {result.steps_run} of {result.steps_total} steps run "
            f"in {format_duration(elapsed)}"
        )
    if result.pushed:
        app.echo(f"Pushed {result.pushed}")


@click.command("init")
@global_options
@_FILE_OPTION
@click.option("--example", metavar="NAME", default=None, callback=check_example,
              shell_complete=complete_example,
              help="Write the example NAME's coop.toml (and the files it uses) into the "
                   "workspace, then build it; existing files are never overwritten.")
@click.option("-w", "--workspace", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Workspace directory (default: cwd).")
@click.option("--no-cache", is_flag=True, help="Ignore cached OCI layers and build steps.")
@click.option(
    "--push",
    metavar="REF",
    default=None,
    help="After building, push the rootfs as an OCI image to REF (CI prebuilds).",
)
@click.option(
    "--prebuilt",
    metavar="REPO",
    default=None,
    help="Pull a prebuilt rootfs from REPO when it has this build key.",
)
@click.pass_obj
def init_command(
    app: App, *, coopfile: Path | None, example: str | None, workspace: Path | None,
    no_cache: bool, push: str | None, prebuilt: str | None,
) -> None:
    """Build the rootfs from the Coopfile. Required before first session."""
    app.workspace_dir = workspace
    if example is not None:
        if coopfile is not None:
            raise click.UsageError("--example writes the workspace's coop.toml: drop -f")
        written = write_example(example, app.workspace, app.environ)
        shown = ", ".join(display_path(path, app.environ) for path in written)
        app.echo(f"Wrote {shown} from the {example} example")
    elif coopfile is None:
        require_coopfile(app, app.workspace)
    if not no_cache and push is None and _up_to_date(app, coopfile):
        return
    run_build(app, coopfile, no_cache=no_cache, push=push, prebuilt=prebuilt)


def _up_to_date(app: App, coopfile: Path | None) -> bool:
    """The quick check (coop_build.quickcheck): when the Coopfile's bytes are those of the
    workspace's complete build, say so without loading the Coopfile (no pydantic)."""
    from coop_build.quickcheck import check

    hit = check(
        app.paths,
        app.workspace,
        path=coopfile,
        global_path=app.global_config,
        environ=app.environ,
    )
    if hit is None:
        return False
    for warning in hit.warnings:
        app.warn(warning)
    app.echo(f"Nothing to do: rootfs {hit.build_key[:12]} is up to date")
    return True


@click.command("rebuild")
@global_options
@_FILE_OPTION
@click.pass_obj
def rebuild_command(app: App, coopfile: Path | None) -> None:
    """Rebuild the rootfs from scratch and remove the old one."""
    from coop_build.store import Store

    if coopfile is None:
        require_coopfile(app, app.workspace)

    store = Store(app.paths)
    previous = store.workspace_build(app.workspace)
    result = run_build(app, coopfile, no_cache=True)
    # Sessions arrive with the daemon. Then: keep every build and layer a running session
    # uses (pass them as ``keep`` below), and say that the old rootfs goes when it ends.
    in_use: tuple[str, ...] = ()
    if (
        previous is not None
        and previous.build_key != result.build_key
        and previous.build_key in store.unused_builds(keep=in_use)
        and store.remove_build(previous.build_key)
    ):
        app.echo(f"Removed previous rootfs {previous.build_key[:12]}")
    # A --no-cache build of an unchanged Coopfile replaces the layers of the same key;
    # the replaced ones (and those of a removed build) are now unreferenced.
    report = store.gc()
    logger.debug("gc removed %d unused layers", len(report.layers_removed))
