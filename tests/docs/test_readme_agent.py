"""The README's host-image agent Coopfile is valid, plans the npm install as its one
setup step, and `coop trust` shows it the lines the README says it does."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from coop_build.api import Builder, CoopPaths, load_coopfile
from coop_run.cli.trust import PROMPT

ROOT = Path(__file__).resolve().parents[2]
SECTION = "### A real agent on the host image"


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start)
    return text[start:end if end >= 0 else len(text)]


def _block(section: str, lang: str) -> str:
    match = re.search(rf"```{lang}\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"no {lang} block in the README's {SECTION!r}"
    return match.group(1)


def test_readme_agent_coopfile_plans_and_asks_what_the_readme_shows(tmp_path: Path) -> None:
    section = _section()
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "coop.toml").write_text(_block(section, "toml"))
    loaded = load_coopfile(ws / "coop.toml", workspace=ws, global_path=tmp_path / "none.toml",
                           environ={"HOME": str(tmp_path), "ANTHROPIC_API_KEY": "k"})
    assert loaded.coopfile.base.is_host
    assert loaded.coopfile.agent.command == "claude"
    plan = Builder(CoopPaths(tmp_path / "home")).plan(loaded)
    assert [(s.kind, s.command) for s in plan.steps] == [
        ("base", None), ("setup", "npm install -g @anthropic-ai/claude-code")]
    assert "docs/agents.md" in section and (ROOT / "docs" / "agents.md").is_file()

    coop = Path(sys.executable).parent / "coop"
    proc = subprocess.run([str(coop), "trust"], cwd=ws, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    asked = proc.stdout.splitlines()[:2]
    console = _block(section, "console").splitlines()
    prompt = console.index("$ coop") + 1
    assert console[prompt:prompt + 2] == asked
    assert console[prompt + 2] == f"{PROMPT}y"
