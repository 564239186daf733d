"""``image = "host"`` as the lowest layer, through the real CLI (issue 11, point 1).

Setup steps write into the host's own directories: pip into the system Python, npm's
global prefix, ``/usr/local``, apt into the host's dpkg database. ``coop init`` keeps
each write in its step's layer, a session (``coop -d``, ``coop shell -c``) sees them and
writes on top, and the host never sees any of it. apt adds packages the host lacks;
replacing one of the host's own is refused by the kernel (the host's files are host
root's), and coop says so in one line. Packages come from the loopback mirror only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from coop_cli import coop_init, remove_the_store
from session_support import Coop

from coop_build.hostlayer import system_identity
from support.prepare import APT_MIRROR_STEP, MIRROR_HOST
from support.require import require

pytestmark = [pytest.mark.slow, pytest.mark.asuser, pytest.mark.usefixtures("remove_the_store")]
__all__ = ["remove_the_store"]  # a fixture: pytest finds it here

HOST_PYTHON = "/usr/bin/python3"


def write_coopfile(workspace: Path, packages: Mapping[str, list[str]], setup: list[str]) -> None:
    workspace.mkdir(parents=True, exist_ok=True)
    lines = ['[base]\nimage = "host"\n', "[packages]"]
    lines += [f"{manager} = {json.dumps(names)}" for manager, names in packages.items()]
    lines += [f"\n[setup]\nrun = {json.dumps(setup)}\n", '[agent]\ncommand = "/bin/sh"\n',
              '[network]\nmode = "none"\n', "[session]\npersist = []\n"]
    (workspace / "coop.toml").write_text("\n".join(lines))


def host(argv: list[str]) -> str:
    """A command on the host itself (not in any sandbox); its output, or "" on failure."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def host_six() -> str:
    return host([HOST_PYTHON, "-c", "import six; print(six.__version__, six.__file__)"])


def host_package(name: str) -> str:
    return host(["dpkg-query", "-W", "-f", "${Status} ${Version}", name])


def mirror_version(mirror: Any, package: str) -> str:
    """The version of ``package`` the mirror's Debian repository serves."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": mirror.url}))
    url = f"http://{MIRROR_HOST}/debian/dists/bookworm/main/binary-amd64/Packages"
    with opener.open(url, timeout=10) as response:
        text = response.read().decode()
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
        if fields.get("Package") == package:
            return fields["Version"]
    raise AssertionError(f"the mirror has no {package}")


def test_steps_install_into_the_hosts_directories_and_only_the_session_sees_it(
        coop: Coop, coop_env: Any, mirror: Any) -> None:
    require(host([HOST_PYTHON, "-m", "pip", "--version"]) != "", "pip for /usr/bin/python3")
    npm = shutil.which("npm")
    require(npm is not None, "npm")
    assert npm is not None
    npm_root = Path(host([npm, "root", "-g"]))
    token = uuid.uuid4().hex[:12]
    tool = Path("/usr/local/bin") / f"coop-test-{token}"
    six_before, npm_before = host_six(), (npm_root / "is-number").exists()
    workspace = coop.home / "proj"
    write_coopfile(workspace, {"pip": ["six==1.17.0"], "npm": ["is-number"]},
                   [f"printf '#!/bin/sh\\necho {token}\\n' > {tool} && chmod 755 {tool}"])

    built = coop_init(coop_env, workspace, mirror.env)
    assert built.returncode == 0, built
    assert "built: 4 of 4 steps run" in built.stdout, built
    assert coop("-d", cwd=workspace).returncode == 0
    script = ("python3 -c 'import six; print(six.__version__)'; "
              f"coop-test-{token}; "
              'test -f "$(npm root -g)/is-number/package.json" && echo npm-ok; '
              f"echo session > /usr/local/bin/coop-session-{token} && echo wrote")
    shell = coop("shell", "-c", script, cwd=workspace)
    assert shell.returncode == 0, shell
    assert shell.stdout.split() == ["1.17.0", token, "npm-ok", "wrote"], shell

    # The host has none of it.
    assert not tool.exists() and not Path(f"/usr/local/bin/coop-session-{token}").exists()
    assert host_six() == six_before
    assert (npm_root / "is-number").exists() == npm_before
    # Another session of the same build sees the steps' writes, not the first session's.
    assert coop("kill", "-f", "proj", cwd=workspace).returncode == 0
    assert coop("-d", cwd=workspace).returncode == 0
    again = coop("shell", "-c", f"coop-test-{token}; test -e /usr/local/bin/coop-session-{token}"
                 " || echo gone", cwd=workspace)
    assert again.returncode == 0 and again.stdout.split() == [token, "gone"], again


def test_apt_adds_what_the_host_lacks_and_refuses_in_one_line_to_replace_its_own(
        coop: Coop, coop_env: Any, mirror: Any, tmp_path: Path) -> None:
    """jq is the host's: removed in one step, apt installs the mirror's in the next, and
    the session has it. Reinstalling the host's own jq instead cannot work (dpkg first
    hard-links each file it replaces, and no sandbox may hard-link host root's files):
    one line says so."""
    require(host_package("jq").startswith("install ok installed"), "jq installed on the host")
    jq_before = host_package("jq")

    adds = coop.home / "adds"
    write_coopfile(adds, {}, [APT_MIRROR_STEP, "dpkg -r --force-depends jq libjq1",
                              "apt-get install -y --no-install-recommends jq libjq1"])
    built = coop_init(coop_env, adds, mirror.env)
    assert built.returncode == 0, built
    assert coop("-d", cwd=adds).returncode == 0
    shell = coop("shell", "-c", "echo '{\"a\": 7}' | jq -M .a; "
                 "dpkg-query -W -f '${Status} ${Version}\\n' jq", cwd=adds)
    assert shell.returncode == 0, shell
    installed = f"install ok installed {mirror_version(mirror, 'jq')}"
    assert shell.stdout.splitlines() == ["7", installed], shell

    replaces = coop.home / "replaces"
    write_coopfile(replaces, {}, [APT_MIRROR_STEP, "apt-get install -y --reinstall jq"])
    failed = coop_init(coop_env, replaces, mirror.env)
    assert failed.returncode == 1, failed
    assert failed.stderr.startswith('error: step [3/3] "apt-get install -y --reinstall jq" '
                                    "failed: dpkg cannot replace the host's own packages (jq"), \
        failed
    assert len(failed.stderr.splitlines()) == 1, failed
    assert host_package("jq") == jq_before


def test_a_build_from_another_release_of_the_host_is_used_with_one_warning(
        coop: Coop, host_workspace: Path) -> None:
    """The host image's build records the system it was made on; after a release upgrade
    (here: the record says another) a session still starts on it, and says why it is old."""
    record_path = next((coop.coop_home / "rootfs").glob("*/build.json"))
    record = json.loads(record_path.read_text())
    assert record["system"] == system_identity()
    record["system"] = "debian 11 x86_64; usr etc; bin -> usr/bin"
    record_path.write_text(json.dumps(record))
    started = coop("-d", cwd=host_workspace)
    assert started.returncode == 0, started
    assert started.stderr.splitlines() == [
        'warning: the host\'s system changed since the last build of image = "host"; run '
        "coop init to rebuild (using the old rootfs)"], started
