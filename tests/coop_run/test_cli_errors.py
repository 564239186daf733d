"""The single mapping from library errors to exit codes and printed lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from coop_build import errors as be
from coop_build.paths import display_path
from coop_run.cli.errors import describe_error, exit_code_for


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (be.CoopfileError("coop.toml: bad"), 2),
        (be.InvalidReferenceError("bad ref"), 2),
        (be.RootfsNotBuiltError("not built"), 5),
        (be.BuildInterruptedError("interrupted"), 130),
        (be.RegistryError("down"), 1),
        (be.NotFoundError("nope"), 1),
        (be.ToolError("umoci failed", tool="umoci"), 1),
        (be.StoreError("bad"), 1),
        (be.CoopBuildError("x"), 1),
    ],
)
def test_exit_codes(error: be.CoopBuildError, code: int) -> None:
    assert exit_code_for(error) == code


def test_every_error_class_has_an_exit_code() -> None:
    def subclasses(cls: type[be.CoopBuildError]) -> list[type[be.CoopBuildError]]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    for cls in subclasses(be.CoopBuildError):
        assert exit_code_for(cls.__new__(cls)) in (1, 2, 5, 130), cls


def test_step_failure_gets_log_hint_and_indented_tail() -> None:
    err = be.StepFailedError(
        "step 3/5 failed with exit code 2: make",
        step="make", exit_code=2,
        log_tail=[f"line {i}" for i in range(40)],
        log_path=Path("/home/u/.coop/logs/build/k.log"),
        index=3, total=5,
    )
    lines = describe_error(err, {"HOME": "/home/u"})
    assert lines[0] == (
        'error: step [3/5] "make" failed with exit code 2; see ~/.coop/logs/build/k.log'
    )
    assert lines[1:] == [f"    line {i}" for i in range(25, 40)]


def test_step_failure_without_message_is_worded_from_its_fields() -> None:
    err = be.StepFailedError("x died", step="x", exit_code=None, log_tail=[], log_path=None)
    assert describe_error(err, {}) == ['error: step "x" was killed']


def test_tool_error_shows_the_tools_own_words() -> None:
    err = be.ToolError("umoci unpack failed", tool="umoci", stderr="first\nreal reason\n")
    assert describe_error(err, {}) == ["error: umoci unpack failed", "    first",
                                       "    real reason"]


def test_display_path_is_what_a_user_types() -> None:
    home = {"HOME": "/home/u"}
    elsewhere = Path("/srv")
    assert display_path(Path("/home/u/x"), home, cwd=elsewhere) == "~/x"
    assert display_path(Path("/home/u"), home, cwd=elsewhere) == "~"
    assert display_path(Path("/home/user2/x"), home, cwd=elsewhere) == "/home/user2/x"
    assert display_path(Path("/x"), {"HOME": "/"}, cwd=elsewhere) == "/x"
    # under the working directory: ./, before ~
    project = Path("/home/u/proj")
    assert display_path(Path("/home/u/proj/coop.toml"), home, cwd=project) == "./coop.toml"
    assert display_path(Path("coop.toml"), home, cwd=project) == "./coop.toml"
    assert display_path(project, home, cwd=project) == "."
    assert display_path(Path("../other/a"), home, cwd=project) == "~/other/a"
    # the daemon's working directory is /: it shortens nothing
    assert display_path(Path("/home/u/proj/coop.toml"), home, cwd=Path("/")) == (
        "~/proj/coop.toml")
    assert display_path(Path("/srv/x"), home, cwd=Path("/")) == "/srv/x"


def test_display_path_follows_symlinks_into_the_cwd(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (tmp_path / "link").symlink_to(project)
    assert display_path(tmp_path / "link" / "coop.toml", {}, cwd=project) == "./coop.toml"
    assert display_path(tmp_path / "link", {"HOME": str(tmp_path)}, cwd=Path("/")) == "~/link"
