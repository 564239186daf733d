"""What a test needs from the machine (a tool, a subordinate id range, the test user).

Locally a missing piece skips the test: a developer's laptop may lack umoci. In CI
(``CI=true``) it fails the test instead, so a suite cannot pass by skipping what it was
meant to run. Skips for another reason (``rootonly`` as a user, a test meaningful only as
the user when run as root) are not for this helper: they stay skips everywhere.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    """The suite runs in CI, where nothing it needs may be missing."""
    return os.environ.get("CI") == "true"


def require(condition: bool, what: str) -> None:
    """Go on when ``condition`` holds; else skip the test (fail it in CI) saying ``what``
    is missing."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{what} (CI=true: a missing tool, range or user fails the test)",
                    pytrace=False)
    pytest.skip(what)


def needs(condition: bool, what: str) -> pytest.MarkDecorator:
    """``require`` as a mark, for a test or a module's ``pytestmark``; the root conftest
    applies it as each marked test is set up."""
    return pytest.mark.needs(condition, what)


def apply_needs(item: pytest.Item) -> None:
    """``require`` for every ``needs`` mark of ``item`` (conftest's ``pytest_runtest_setup``)."""
    for mark in item.iter_markers("needs"):
        require(*mark.args)
