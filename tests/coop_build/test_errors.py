"""The error family: one code per class, declared in its class line; one constructor shape."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from coop_build import errors as be


def all_classes() -> list[type[be.CoopBuildError]]:
    out: list[type[be.CoopBuildError]] = []
    todo = [be.CoopBuildError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


def test_every_class_has_its_own_code() -> None:
    classes = all_classes()
    codes = [cls.code for cls in classes]
    declared = [c for c in vars(be).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert sorted(map(str, classes)) == sorted(map(str, declared))  # all in errors.py
    assert len(set(codes)) == len(codes), codes
    assert all(code.isupper() for code in codes), codes


def test_a_code_cannot_be_forgotten_or_reused() -> None:
    with pytest.raises(TypeError, match="code"):
        type("NoCode", (be.StoreError,), {})
    with pytest.raises(TypeError, match="'STORE_ERROR' is already StoreError's"):
        type("Twin", (be.CoopBuildError,), {}, code="STORE_ERROR")


# The details each class takes besides the message (keyword-only, like every detail).
DETAILS = {
    be.ToolError: {"tool": "umoci", "stderr": "real reason\n"},
    be.StepFailedError: {"step": "make", "exit_code": 2, "log_tail": ["x"],
                         "log_path": Path("/l"), "index": 1, "total": 3, "reason": "why"},
}


@pytest.mark.parametrize("cls", all_classes(), ids=lambda c: c.__name__)
def test_one_constructor_shape(cls: type[be.CoopBuildError]) -> None:
    details = DETAILS.get(cls, {})
    err = cls("one line", **details)
    assert (str(err), err.message, err.args, err.code) == (
        "one line", "one line", ("one line",), cls.code)
    assert {f.name: getattr(err, f.name) for f in dataclasses.fields(err)} == {
        "message": "one line", **details}
    # the message is the one positional argument: a second is refused, never taken as a
    # detail (every detail is keyword-only)
    with pytest.raises(TypeError, match="positional"):
        cls("one line", "extra", **details)


def test_optional_details_default() -> None:
    assert be.ToolError("m", tool="t").stderr == ""
    step = be.StepFailedError("m", step="s", exit_code=None, log_tail=[], log_path=None)
    assert (step.index, step.total, step.reason) == (None, None, None)
