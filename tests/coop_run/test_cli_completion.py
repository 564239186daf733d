"""Shell completion (click's): the scripts the README tells users to load, and what the
real ``coop`` answers to a completion request from bash, zsh and fish."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
from coop_cli import COOP, complete, coop_environ

from coop_run.cli.app import App
from coop_run.cli.group import COMMANDS
from coop_run.cli.main import run

# The shell's completion function, as the README's line installs it.
SOURCED = {"bash": "_coop_completion()", "zsh": "#compdef coop",
           "fish": "function _coop_completion"}


def _bash(coop_env: Any, words: str, cword: str) -> list[str]:
    return complete(coop_environ(coop_env), "bash_complete", words, cword)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_source_line_prints_the_shells_script(coop_env: Any, shell: str) -> None:
    env = {**coop_environ(coop_env), "_COOP_COMPLETE": f"{shell}_source"}
    proc = subprocess.run([str(COOP)], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert (proc.returncode, proc.stderr) == (0, ""), proc
    assert SOURCED[shell] in proc.stdout
    assert f"_COOP_COMPLETE={shell}_complete" in proc.stdout


def test_bash_completes_command_names_and_options(coop_env: Any) -> None:
    assert _bash(coop_env, "coop ", "1") == [f"plain,{name}" for name in sorted(COMMANDS)]
    assert _bash(coop_env, "coop sh", "1") == ["plain,shell", "plain,shutdown"]
    # "ls" is one of the fast, click-free spellings: completion still reaches click
    assert _bash(coop_env, "coop ls", "1") == ["plain,ls"]
    assert "plain,--example" in _bash(coop_env, "coop init --", "2")
    assert _bash(coop_env, "coop init --example q", "3") == ["plain,quickstart"]


def test_zsh_and_fish_complete_command_names(coop_env: Any) -> None:
    zsh = complete(coop_environ(coop_env), "zsh_complete", "coop re", "1")
    # zsh: type, value, help, one per line each
    assert zsh[0::3] == ["plain", "plain"] and zsh[1::3] == ["rebuild", "restart"], zsh
    assert zsh[2].startswith("Rebuild the rootfs from scratch"), zsh
    fish = complete(coop_environ(coop_env), "fish_complete", "coop re", "re")
    assert [line.split("\t")[0] for line in fish] == ["plain,rebuild", "plain,restart"], fish


def test_bash_loads_the_script_and_fills_compreply(coop_env: Any) -> None:
    """What a user's shell does: eval the README's line, then Tab after ``coop sh``."""
    script = ('eval "$(_COOP_COMPLETE=bash_source coop)"; complete -p coop; '
              'COMP_WORDS=(coop sh); COMP_CWORD=1; _coop_completion coop; '
              'printf "%s\\n" "${COMPREPLY[@]}"')
    env = coop_environ(coop_env)
    env["PATH"] = f"{COOP.parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert (proc.returncode, proc.stderr) == (0, ""), proc
    assert proc.stdout.splitlines() == ["complete -o nosort -F _coop_completion coop",
                                        "shell", "shutdown"], proc


def test_run_returns_the_completion_exit_code_in_process(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``run()`` returns instead of exiting, also for click's completion answer."""
    for name, value in (("_COOP_COMPLETE", "bash_complete"), ("COMP_WORDS", "coop ls"),
                        ("COMP_CWORD", "1")):
        monkeypatch.setenv(name, value)
    assert run(["ls"], App(environ=dict(os.environ))) == 0
    assert capsys.readouterr().out == "plain,ls\n"
