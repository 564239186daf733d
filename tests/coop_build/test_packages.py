"""Package-manager command lines: pinned strings, quoting, and real shell parsing."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from coop_build.errors import CoopfileError
from coop_build.packages import KNOWN_MANAGERS, install_command


def test_known_managers() -> None:
    assert set(KNOWN_MANAGERS) == {"apk", "apt", "dnf", "pacman", "pip", "npm"}


@pytest.mark.parametrize(
    ("manager", "expected"),
    [
        ("apk", "apk add --no-cache git curl"),
        ("dnf", "dnf install -y git curl"),
        ("pacman", "pacman -Sy --noconfirm git curl"),
        ("npm", "npm install -g --no-audit --no-fund git curl"),
    ],
)
def test_simple_managers(manager: str, expected: str) -> None:
    assert install_command(manager, ["git", "curl"], single_idmap=False) == expected
    # Only apt cares about the id map.
    assert install_command(manager, ["git", "curl"], single_idmap=True) == expected


def test_apt_full_idmap() -> None:
    assert install_command("apt", ["jq"], single_idmap=False) == (
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y"
        " --no-install-recommends jq && rm -rf /var/lib/apt/lists/*"
    )


def test_apt_single_idmap_runs_sandbox_as_root() -> None:
    assert install_command("apt", ["jq"], single_idmap=True) == (
        "apt-get -o APT::Sandbox::User=root update"
        " && DEBIAN_FRONTEND=noninteractive apt-get -o APT::Sandbox::User=root install -y"
        " --no-install-recommends jq && rm -rf /var/lib/apt/lists/*"
    )


def test_pip() -> None:
    assert install_command("pip", ["six", "requests>=2"], single_idmap=False) == (
        "if command -v python3 >/dev/null 2>&1;"
        " then PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore"
        " python3 -m pip install --no-cache-dir six 'requests>=2';"
        " else PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore"
        " pip install --no-cache-dir six 'requests>=2'; fi"
    )


def test_names_are_quoted() -> None:
    evil = "x; touch /pwned"
    cmd = install_command("apk", [evil, "$(id)"], single_idmap=False)
    assert shlex.split(cmd) == ["apk", "add", "--no-cache", evil, "$(id)"]


@pytest.mark.parametrize("name", ["-y", "--force", ""])
def test_option_like_names_refused(name: str) -> None:
    with pytest.raises(CoopfileError, match=r"\[packages\]\.apk"):
        install_command("apk", [name], single_idmap=False)


def test_empty_list_and_unknown_manager() -> None:
    with pytest.raises(CoopfileError, match="no packages"):
        install_command("apt", [], single_idmap=False)
    with pytest.raises(CoopfileError, match="unknown package manager 'brew'"):
        install_command("brew", ["x"], single_idmap=False)


def _stub(bindir: Path, name: str, log: Path) -> None:
    script = bindir / name
    script.write_text(
        "#!/bin/sh\n"
        f'echo "{name} BSP=$PIP_BREAK_SYSTEM_PACKAGES RUA=$PIP_ROOT_USER_ACTION $*" >> {log}\n'
    )
    script.chmod(0o755)


def _run_with(bindir: Path, cmd: str) -> None:
    env = {"PATH": str(bindir), "HOME": str(bindir)}
    subprocess.run(["/bin/sh", "-c", cmd], env=env, check=True)


@pytest.mark.parametrize("have_python", [True, False])
def test_pip_command_in_a_real_shell(tmp_path: Path, have_python: bool) -> None:
    """The pip line parses in sh, uses python3 -m pip, and falls back to pip without it."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "log"
    if have_python:
        _stub(bindir, "python3", log)
    _stub(bindir, "pip", log)
    # `command -v` needs the shell's builtin only; the stubs run through /bin/sh.
    os.symlink("/bin/sh", bindir / "sh")
    _run_with(bindir, install_command("pip", ["six", "a b"], single_idmap=False))
    prog = "python3 BSP=1 RUA=ignore -m pip" if have_python else "pip BSP=1 RUA=ignore"
    assert log.read_text() == f"{prog} install --no-cache-dir six a b\n"


def test_apt_command_in_a_real_shell(tmp_path: Path) -> None:
    """apt-get runs update then install (as two calls), and stops at the first failure."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "log"
    script = bindir / "apt-get"
    script.write_text(f'#!/bin/sh\necho "DF=$DEBIAN_FRONTEND $*" >> {log}\n[ "$FAIL" != "$1" ]\n')
    script.chmod(0o755)
    cmd = install_command("apt", ["jq"], single_idmap=False).replace(
        "rm -rf /var/lib/apt/lists/*", f"echo cleaned >> {log}"
    )
    _run_with(bindir, cmd)
    assert log.read_text().splitlines() == [
        "DF= update",
        "DF=noninteractive install -y --no-install-recommends jq",
        "cleaned",
    ]
    log.unlink()
    env = {"PATH": str(bindir), "FAIL": "install"}
    proc = subprocess.run(["/bin/sh", "-c", cmd], env=env, check=False)
    assert proc.returncode != 0
    assert "cleaned" not in log.read_text()
