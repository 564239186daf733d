"""First contact: ``coop init --example NAME``, and what a workspace without a Coopfile hears.

A directory without ``coop.toml`` (and a global layer that names no agent) gets one line
pointing at the examples, instead of the missing ``[agent].command`` that loading an empty
Coopfile reports. The examples are the repository's ``examples/``: a wheel carries them as
``coop_run/examples`` (``hatch_build.py`` adds the directory itself, so the two cannot
differ); an editable install reads the checkout's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import click

from coop_build.errors import CoopfileError
from coop_build.paths import display_path
from coop_run.cli.app import App
from coop_run.errors import CoopError

COOPFILE = "coop.toml"
_NOT_COPIED = frozenset({"README.md"})  # the example's documentation, not the workspace's


def examples_dir() -> Path | None:
    """The directory holding one directory per example, if this install has one."""
    # In the wheel: coop_run/examples. In the checkout of an editable install: cli/ ->
    # coop_run/ -> src/ -> coop-run/ -> packages/ -> the repository's examples/.
    parents = Path(__file__).resolve().parents
    candidates = [parents[1] / "examples"]
    if len(parents) > 5:
        candidates.append(parents[5] / "examples")
    for candidate in candidates:
        if (candidate / "quickstart" / COOPFILE).is_file():
            return candidate
    return None


def example_names() -> list[str]:
    """Every example's name, sorted."""
    root = examples_dir()
    if root is None:
        return []
    return sorted(p.name for p in root.iterdir() if (p / COOPFILE).is_file())


def example_files(name: str) -> list[Path]:
    """What ``--example name`` writes: the example's Coopfile first, then the files it
    uses (the quickstart's agent script), never its README."""
    root = examples_dir()
    if root is None or name not in example_names():
        raise CoopfileError(f"no example {name!r}")
    files = [p for p in (root / name).iterdir()
             if p.is_file() and not p.is_symlink() and p.name not in _NOT_COPIED]
    return sorted(files, key=lambda p: (p.name != COOPFILE, p.name))


def write_example(name: str, workspace: Path, environ: Mapping[str, str]) -> list[Path]:
    """Copy the example's files into ``workspace``; refuse if any of them exists there."""
    sources = example_files(name)
    targets = [workspace / source.name for source in sources]
    for target in targets:
        if target.exists() or target.is_symlink():
            raise _exists(target, environ)
    for source, target in zip(sources, targets, strict=True):
        mode = 0o777 if source.stat().st_mode & 0o111 else 0o666  # less the umask
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            with os.fdopen(fd, "wb") as out:
                out.write(source.read_bytes())
        except FileExistsError:  # made since the check above
            raise _exists(target, environ) from None
        except OSError as exc:
            raise CoopError(f"cannot write {display_path(target, environ)}: "
                            f"{exc.strerror or exc}", code="WRITE_FAILED") from None
    return targets


def _exists(target: Path, environ: Mapping[str, str]) -> CoopError:
    return CoopError(f"{display_path(target, environ)} already exists; "
                     "coop init --example writes only new files", code="FILE_EXISTS")


def require_coopfile(app: App, workspace: Path) -> None:
    """Raise the first-contact error when ``workspace`` has no Coopfile and the global
    layer names no agent (with one that does, a workspace needs no file of its own)."""
    if (workspace / COOPFILE).exists() or _global_names_agent(app.global_config):
        return
    raise first_contact_error(app, workspace)


def first_contact_error(app: App, workspace: Path) -> CoopfileError:
    """``no ./coop.toml here; start from an example: coop init --example NAME (...)``."""
    here = workspace == Path.cwd().resolve()
    missing = display_path(workspace / COOPFILE, app.environ)
    where = f"no {missing} here" if here else f"no {missing}"
    names = example_names()
    if not names:  # an install without its examples: say what the file needs
        return CoopfileError(f"{where}; write one (it needs at least [agent] command)")
    flag = "" if here else f" -w {display_path(workspace, app.environ)}"
    return CoopfileError(f"{where}; start from an example: coop init{flag} --example NAME "
                         f"({', '.join(names)})")


def _global_names_agent(path: Path) -> bool:
    """Whether the global layer sets ``[agent].command``; an unreadable or invalid file
    counts as yes, so that loading the Coopfile reports what is wrong with it."""
    import tomllib  # only here: the Coopfile itself is read by coop_build

    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return True
    agent = data.get("agent")
    return isinstance(agent, dict) and "command" in agent


def check_example(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--example``'s callback: the name of an example, or a usage error listing them."""
    if value is None:
        return None
    names = example_names()
    if value not in names:
        choices = ", ".join(names) if names else "none in this install"
        raise click.BadParameter(f"no example {value!r} (examples: {choices})", param=param)
    return value


def complete_example(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """``--example``'s shell completion: the example names."""
    return [name for name in example_names() if name.startswith(incomplete)]
