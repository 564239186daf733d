"""The escape suite's untrusted Coopfile (issue 10, points 4 and 5), through the real
``coop``, daemon and sandbox: a repository's ``coop.toml`` asking for ``/etc``, the home
directory, a directory outside the workspace, the host's network or a ``$VAR`` secret.

``/etc`` (and the host's other own directories, and ``COOP_HOME``) is refused outright,
trusted or not. Everything else is refused until the user trusts exactly those bytes
(``coop trust``, or a yes at a terminal), and refused again once the file changes by one
byte. The secret's value never shows in coop's output or under ``COOP_HOME`` but inside
the trusted session. The user's own global layer asking the same needs no trust.
"""

from __future__ import annotations

import contextlib
import os
import pty
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from coop_cli import COOP, Result
from local_terminal import Terminal, terminal
from session_support import Coop, ls_json

pytestmark = pytest.mark.asuser

SECRET = f"s3cret-{os.getpid()}-DO-NOT-SHOW"
BASE = '[base]\nimage = "host"\n\n[agent]\ncommand = "/bin/sh"\n\n[session]\npersist = []\n'
NONE = '\n[network]\nmode = "none"\n'
PROMPT = b"Trust this coop.toml? [y/N] "


@dataclass(frozen=True)
class Case:
    name: str
    tables: Callable[[Coop], str]  # the coop.toml's tables beyond BASE
    asks: Callable[[Coop], str]    # the ask's line as `coop trust` prints it
    inside: Callable[[Coop], str]  # a command showing the widening took effect...
    shows: Callable[[Coop], str]   # ...and what it prints


def mount_line(path: Path, written: str) -> str:
    return (f'  [workspace].mount = "{written}": binds {path} into the session read-write '
            "(outside the workspace directory)")


CASES = [
    Case("the home directory",
         lambda coop: f'{NONE}\n[workspace]\nmount = "{coop.home}"\n',
         lambda coop: mount_line(coop.home, str(coop.home)),
         lambda coop: "cat /workspace/home-marker", lambda coop: "in the home\n"),
    Case("a directory outside",
         lambda coop: f'{NONE}\n[workspace]\nmount = "../elsewhere"\n',
         lambda coop: mount_line(coop.home / "elsewhere", "../elsewhere"),
         lambda coop: "cat /workspace/marker", lambda coop: "elsewhere\n"),
    Case("a directory holding COOP_HOME",  # trusted, and still no trust store inside
         lambda coop: f'{NONE}\n[workspace]\nmount = "../.."\n',
         lambda coop: mount_line(coop.home.parent, "../.."),
         lambda coop: f"ls -A /workspace/{coop.coop_home.relative_to(coop.home.parent)} "
                      "&& echo end",  # there, and empty
         lambda coop: "end\n"),
    Case("host network",
         lambda coop: '\n[network]\nmode = "host"\n',
         lambda coop: ('  [network].mode = "host": shares the host\'s network (its addresses, '
                       "its loopback services and its abstract Unix sockets)"),
         lambda coop: "readlink /proc/self/ns/net",
         lambda coop: os.readlink("/proc/self/ns/net") + "\n"),
    Case("a $VAR secret",
         lambda coop: f'{NONE}\n[env]\nTOKEN = "$MY_SECRET"\n',
         lambda coop: ('  [env].TOKEN = "$MY_SECRET": passes $MY_SECRET from your environment '
                       "into the session"),
         lambda coop: 'echo "$TOKEN"', lambda coop: SECRET + "\n"),
]


@pytest.fixture
def project(coop: Coop) -> Path:
    """``~/proj`` (built, image = "host"), with ``~/elsewhere`` and a file in the home to
    tell the mounts apart; the secret is in every ``coop``'s environment."""
    coop.env["MY_SECRET"] = SECRET
    (coop.home / "elsewhere").mkdir()
    (coop.home / "elsewhere" / "marker").write_text("elsewhere\n")
    (coop.home / "home-marker").write_text("in the home\n")
    workspace = coop.home / "proj"
    write(coop, workspace, NONE)
    return workspace


def write(coop: Coop, workspace: Path, tables: str) -> None:
    """The workspace's coop.toml, built (a build does not need trust: only sessions)."""
    workspace.mkdir(exist_ok=True)
    (workspace / "coop.toml").write_text(BASE + tables)
    built = coop("init", "-q", cwd=workspace)
    assert built.returncode == 0, built


def refused(coop: Coop, workspace: Path, result: Result) -> None:
    """One line naming ``coop trust``, exit 2, and nothing started."""
    assert (result.returncode, result.stdout) == (2, ""), result
    assert result.stderr.count("\n") == 1, result
    assert result.stderr.startswith("error: ./coop.toml is not trusted: it asks for "), result
    assert result.stderr.endswith("; to allow that, run: coop trust ./coop.toml\n"), result
    assert ls_json(coop, workspace) == []


def no_secret_anywhere(coop: Coop, *results: Result) -> None:
    """Not in coop's output, its logs (daemon, sessions, builds) nor its records."""
    for result in results:
        assert SECRET not in result.stdout + result.stderr, result
    records = [p for p in coop.coop_home.iterdir() if p.is_file()]
    for path in [*records, *(p for p in (coop.coop_home / "logs").rglob("*") if p.is_file())]:
        assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_an_untrusted_coopfile_runs_only_as_trusted_and_only_as_it_was(
        coop: Coop, project: Path, case: Case) -> None:
    write(coop, project, case.tables(coop))
    first = coop("-d", cwd=project)
    refused(coop, project, first)
    assert not (coop.coop_home / "sessions" / "proj").exists()  # nothing left behind
    trusted = coop("trust", cwd=project)
    assert trusted.returncode == 0, trusted
    assert trusted.stdout == ("./coop.toml asks for more than coop's defaults:\n"
                              f"{case.asks(coop)}\n"
                              "Trusted ./coop.toml (until it changes)\n"), trusted
    created = coop("-d", cwd=project)
    assert (created.returncode, created.stdout) == (0, "session proj created\n"), created
    inside = coop("shell", "-c", case.inside(coop), cwd=project)
    assert (inside.returncode, inside.stdout) == (0, case.shows(coop)), inside
    assert coop("kill", "-f", cwd=project).returncode == 0
    with (project / "coop.toml").open("a") as coopfile:
        coopfile.write("#")  # one byte more: other bytes, not trusted
    again = coop("-d", cwd=project)
    refused(coop, project, again)
    no_secret_anywhere(coop, first, trusted, created, again)


@pytest.mark.parametrize("mount", ["/etc", "/etc/ssh/..", "COOP_HOME"])
def test_the_hosts_own_directories_are_refused_even_when_trusted(
        coop: Coop, project: Path, mount: str) -> None:
    """The table's /etc row: no trust makes these mounts possible."""
    if mount == "COOP_HOME":
        mount = str(coop.coop_home)
    write(coop, project, f'{NONE}\n[workspace]\nmount = "{mount}"\n')
    for args in (["-d"], ["trust"]):
        result = coop(*args, cwd=project)
        assert (result.returncode, result.stdout) == (2, ""), (args, result)
        assert result.stderr.count("\n") == 1, result
        assert "is never bound into a session" in result.stderr, result
    assert ls_json(coop, project) == []
    assert not (coop.coop_home / "trust.json").exists()


def test_the_users_own_global_layer_needs_no_trust(coop: Coop, project: Path) -> None:
    config = coop.home / ".config" / "coop" / "default.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[network]\nmode = "host"\n\n[env]\nTOKEN = "$MY_SECRET"\n')
    write(coop, project, "")  # the workspace asks nothing itself
    created = coop("-d", cwd=project)
    assert (created.returncode, created.stdout) == (0, "session proj created\n"), created
    shown = coop("shell", "-c", 'echo "$TOKEN"; readlink /proc/self/ns/net', cwd=project)
    assert shown.stdout == f"{SECRET}\n{os.readlink('/proc/self/ns/net')}\n", shown
    # the workspace repeating what the global layer gives asks nothing either
    assert coop("kill", "-f", cwd=project).returncode == 0
    write(coop, project, '\n[network]\nmode = "host"\n\n[env]\nOTHER = "${MY_SECRET}"\n')
    again = coop("-d", cwd=project)
    assert (again.returncode, again.stdout) == (0, "session proj created\n"), again
    assert not (coop.coop_home / "trust.json").exists()
    no_secret_anywhere(coop, created, again)


# --- at a terminal: the question -------------------------------------------------------


def asked(coop: Coop, term: Terminal) -> None:
    """What the person sees before answering: the file and each ask in full."""
    term.read_until(b"./coop.toml asks for more than coop's defaults:\r\n")
    term.read_until(b'  [network].mode = "host": shares the host\'s network')
    term.read_until(b'  [env].TOKEN = "$MY_SECRET": passes $MY_SECRET from your environment')
    term.read_until(PROMPT)


@pytest.fixture
def asking(coop: Coop, project: Path) -> Path:
    write(coop, project, '\n[network]\nmode = "host"\n\n[env]\nTOKEN = "$MY_SECRET"\n')
    return project


def test_yes_at_the_terminal_trusts_and_starts_the_session(coop: Coop, asking: Path) -> None:
    with terminal(coop, ["-d"], asking) as term:
        asked(coop, term)
        term.type(b"y\r")
        term.read_until(b"session proj created\r\n")
        assert term.exit_status() == 0
        assert SECRET.encode() not in term.output
    assert [s["name"] for s in ls_json(coop, asking)] == ["proj"]
    # remembered: the next create asks nothing
    assert coop("kill", "-f", cwd=asking).returncode == 0
    assert coop("-d", cwd=asking).stdout == "session proj created\n"


@pytest.mark.parametrize("answer", [b"n\r", b"\r", b"\x04"], ids=["no", "enter", "eof"])
def test_no_at_the_terminal_is_one_line_and_exit_2(coop: Coop, asking: Path,
                                                   answer: bytes) -> None:
    with terminal(coop, ["-d"], asking) as term:
        asked(coop, term)
        term.type(answer)
        term.read_until(b"error: ./coop.toml is not trusted: it asks for the host's network, "
                        b"$MY_SECRET; to allow that, run: coop trust ./coop.toml\r\n")
        assert term.exit_status() == 2
        assert SECRET.encode() not in term.output
    assert ls_json(coop, asking) == []
    assert not (coop.coop_home / "trust.json").exists()


def test_without_a_terminal_on_stdin_nothing_is_asked(coop: Coop, asking: Path) -> None:
    """stderr at a terminal is not enough: the answer would come from a pipe."""
    screen, stderr = pty.openpty()
    try:
        proc = subprocess.run([str(COOP), "-d"], cwd=asking, env=coop.env, input=b"y\n",
                              stdout=subprocess.PIPE, stderr=stderr, timeout=60, check=False)
    finally:
        os.close(stderr)
    shown = b""
    with contextlib.suppress(OSError):  # EIO: the terminal's other end is closed, all read
        while chunk := os.read(screen, 65536):
            shown += chunk
    os.close(screen)
    assert (proc.returncode, proc.stdout) == (2, b""), (proc, shown)
    assert PROMPT not in shown and shown.count(b"\n") == 1, shown
    assert shown.endswith(b"; to allow that, run: coop trust ./coop.toml\r\n"), shown
    assert ls_json(coop, asking) == []
