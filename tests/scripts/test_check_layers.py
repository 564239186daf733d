"""scripts/check-layers: the real tree passes, and each kind of violation is caught,
lazy and TYPE_CHECKING imports included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "scripts" / "check-layers"


def run(*roots: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), *map(str, roots)], capture_output=True,
                          text=True, check=False, timeout=60)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_tree_keeps_its_layers() -> None:
    result = run()
    assert result.returncode == 0, result.stdout


def test_a_cycle_through_a_lazy_import_is_found(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "coop_build/__init__.py": "",
        "coop_build/a.py": "from coop_build import b\n",
        "coop_build/b.py": "def f():\n    from coop_build.a import x\n",
    })
    result = run(root)
    assert result.returncode == 1
    assert "import cycle: coop_build.a -> coop_build.b" in result.stdout


def test_a_type_checking_import_counts(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "coop_run/__init__.py": "",
        "coop_run/daemon/__init__.py": "",
        "coop_run/daemon/server.py": ("from typing import TYPE_CHECKING\n"
                                      "if TYPE_CHECKING:\n"
                                      "    from coop_run.session.supervisor import S\n"),
        "coop_run/session/__init__.py": "",
        "coop_run/session/supervisor.py": "",
    })
    result = run(root)
    assert result.returncode == 1
    assert "coop_run.daemon.server (daemon) may not import coop_run.session.supervisor" in \
        result.stdout


def test_the_daemon_may_import_what_crosses_a_process_line(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "coop_run/__init__.py": "",
        "coop_run/daemon/__init__.py": "",
        "coop_run/daemon/registry.py": "from coop_run.session.config import C\n",
        "coop_run/session/__init__.py": "",
        "coop_run/session/config.py": "from coop_run.session.ptys import P\n",
        "coop_run/session/ptys.py": "",
    })
    result = run(root)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1, lines  # the daemon's import is allowed; config's is not
    assert "coop_run.session.config crosses a process line and may not import " \
        "coop_run.session.ptys" in lines[0]


def test_the_cli_only_finds_or_starts_a_daemon(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "coop_run/__init__.py": "",
        "coop_run/cli/__init__.py": "",
        "coop_run/cli/fast.py": "from coop_run.daemon.autospawn import ensure_daemon\n",
        "coop_run/cli/bad.py": "def f():\n    from coop_run.daemon.server import Daemon\n",
        "coop_run/daemon/__init__.py": "",
        "coop_run/daemon/autospawn.py": "",
        "coop_run/daemon/server.py": "",
    })
    result = run(root)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1, lines
    assert "coop_run.cli.bad (cli) may not import coop_run.daemon.server" in lines[0]


def test_the_library_never_imports_the_runtime(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "coop_build/__init__.py": "",
        "coop_build/x.py": "import coop_run.layout\n",
        "coop_run/__init__.py": "",
        "coop_run/layout.py": "",
    })
    result = run(root)
    assert result.returncode == 1
    assert "coop_build imports coop_run.layout" in result.stdout
