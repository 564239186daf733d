"""docs/security.md names the test behind each promise: every name must exist, so a
renamed or deleted test cannot leave a promise that nothing proves."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
# The doc's short names for the two escape suites.
ALIASES = {"escape": "coop_run/sandbox/test_escape.py",
           "escape_sessions": "coop_run/sessions/test_escape_sessions.py"}
REFERENCE = re.compile(r"`((?:[\w/]+\.py)|escape|escape_sessions)(?:::(\w+))?`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")}


def test_every_test_the_security_doc_names_exists() -> None:
    references = REFERENCE.findall(DOC.read_text())
    assert len(references) >= 30, references  # the doc is the one this test was written for
    missing = []
    for file, name in references:
        path = ROOT / "tests" / ALIASES.get(file, file)
        if not path.is_file():
            missing.append(str(path))
        elif name and name not in _tests_in(path):
            missing.append(f"{file}::{name}")
    assert not missing, missing
