"""``[network] inherit`` through the real CLI, daemon and sandbox (SPEC 13, issue 11 point 3).

The proxy and TLS trust variables of the ``coop`` that starts a session reach the agent
and every shell (the trust files bound read-only under /run/coop/trust/N/), by default
for veth and host and not for none, never with ``inherit = []``; ``coop status`` shows
them with the proxy's password masked, and the password is in no file under COOP_HOME
and no log. In veth the proxy on the host's 127.0.0.1 is reached at the same address
from inside, and no other loopback service is. The proxy is ``support.loopback``'s
service; only loopback is contacted.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from coop_cli import COOP
from session_support import Coop, supervisor_info

from coop_run.sandbox.network.pasta import tun_usable
from support.loopback import echo_service
from support.require import needs

TIMEOUT = 60.0
# Talks to the proxy from inside: the host image's python3 (the host's /usr).
CLIENT = ("import socket,sys\n"
          "try:\n"
          "    c = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
          "    c.sendall(b'hello'); c.shutdown(socket.SHUT_WR)\n"
          "    print('ok:' + c.recv(100).decode())\n"
          "except OSError as e:\n"
          "    print('err:' + type(e).__name__)\n")
VETH_USABLE = needs(os.geteuid() == 0 or tun_usable(),
                    "rootless veth needs /dev/net/tun 0666: run scripts/prepare-test-network up")


def _workspace(coop: Coop, network: str) -> Path:
    workspace = coop.home / "proj"
    workspace.mkdir(parents=True)
    (workspace / "coop.toml").write_text(
        '[base]\nimage = "host"\n\n[agent]\ncommand = "/bin/sh"\n\n'
        f"[network]\n{network}\n\n[session]\npersist = []\n")
    assert coop("init", cwd=workspace).returncode == 0
    if "host" in network:  # the host's network needs the user's yes (SPEC 13)
        assert coop("trust", cwd=workspace).returncode == 0
    return workspace


def _trust_files(home: Path) -> tuple[Path, Path]:
    """A CA file and a certificate directory of the user's (readable by anyone, as a
    CA bundle is: the sandbox's ids need not be the user's)."""
    trust = home / "corp-trust"
    certs = trust / "certs"
    certs.mkdir(parents=True)
    ca = trust / "corp-ca.pem"
    ca.write_text("CORP CA\n")
    (certs / "a.pem").write_text("CERT A\n")
    for path in (home, trust, certs):
        path.chmod(0o755)
    for path in (ca, certs / "a.pem"):
        path.chmod(0o644)
    return ca, certs


def _start(coop: Coop, workspace: Path, env: dict[str, str]) -> None:
    proc = subprocess.run([str(COOP), "-d"], cwd=workspace, env={**coop.env, **env},
                          capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr


def _shell(coop: Coop, workspace: Path, script: str) -> str:
    """``coop shell -c`` from a client without any proxy or trust variable of its own:
    what it prints is the session's."""
    result = coop("shell", "-c", script, cwd=workspace)
    assert result.returncode == 0, result
    return result.stdout.strip()


def _agent_environ(coop: Coop) -> dict[str, str]:
    pid = supervisor_info(coop)["ptys"][0]["host_pid"]
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def _nowhere_on_disk(coop: Coop, secret: str) -> None:
    """Not in any file under COOP_HOME (records, logs, the session's dirs)."""
    found = []
    for path in coop.coop_home.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except PermissionError:  # the sandbox's sub-uid files: none of ours
                continue
            if secret.encode() in data:
                found.append(path)
    assert found == []
    assert list(coop.coop_home.rglob("*.log")), "no log was looked at"


@VETH_USABLE
@pytest.mark.parametrize("mode", ["veth", "host"])
def test_proxies_and_trust_reach_the_session_and_no_disk(coop: Coop, mode: str) -> None:
    secret = f"pw-{os.getpid()}-{mode}"
    workspace = _workspace(coop, f'mode = "{mode}"')
    ca, certs = _trust_files(coop.home)
    with echo_service() as port, echo_service(b"other:") as other:
        url = f"http://me:{secret}@127.0.0.1:{port}"
        _start(coop, workspace, {"http_proxy": url, "HTTPS_PROXY": url,
                                 "no_proxy": "localhost", "SSL_CERT_FILE": str(ca),
                                 "SSL_CERT_DIR": str(certs)})
        shown = _shell(coop, workspace, 'echo "$http_proxy|$HTTPS_PROXY|$no_proxy"; '
                       'echo "$SSL_CERT_FILE|$SSL_CERT_DIR"; cat "$SSL_CERT_FILE" '
                       '"$SSL_CERT_DIR/a.pem"; echo x > "$SSL_CERT_FILE" || echo read-only')
        assert shown.splitlines()[:4] == [
            f"{url}|{url}|localhost",
            "/run/coop/trust/1/corp-ca.pem|/run/coop/trust/2/certs",
            "CORP CA", "CERT A"]
        assert shown.splitlines()[-1] == "read-only" and ca.read_text() == "CORP CA\n"
        agent = _agent_environ(coop)
        assert (agent["http_proxy"], agent["SSL_CERT_FILE"]) == \
            (url, "/run/coop/trust/1/corp-ca.pem")
        # The proxy on the host's loopback, at the same address from inside; in veth no
        # other loopback service (host shares the host's network: everything).
        reach = f"python3 -c \"$(cat <<'EOF'\n{CLIENT}EOF\n)\""
        assert _shell(coop, workspace, f"{reach} {port}") == "ok:proxy:hello"
        assert _shell(coop, workspace, f"{reach} {other}") == \
            ("err:ConnectionRefusedError" if mode == "veth" else "ok:other:hello")
        status = coop("status", cwd=workspace)
    assert status.returncode == 0, status
    lines = status.stdout.splitlines()
    inherited = lines[lines.index(next(x for x in lines if x.startswith("Inherited:"))):]
    note = (f" (veth: the host's 127.0.0.1:{port} forwarded to the session's own)"
            if mode == "veth" else "")
    assert inherited == [
        f"Inherited:  proj: http_proxy=http://***@127.0.0.1:{port}{note}",
        "            proj: no_proxy",
        f"            proj: HTTPS_PROXY=http://***@127.0.0.1:{port}{note}",
        "            proj: SSL_CERT_FILE: ~/corp-trust/corp-ca.pem at "
        "/run/coop/trust/1/corp-ca.pem (read-only)",
        "            proj: SSL_CERT_DIR: ~/corp-trust/certs at /run/coop/trust/2/certs "
        "(read-only)",
    ]
    assert secret not in status.stdout + status.stderr
    _nowhere_on_disk(coop, secret)
    daemon_log = (coop.coop_home / "logs" / "daemon.log").read_text()
    assert "session proj inherits http_proxy, no_proxy, HTTPS_PROXY, SSL_CERT_FILE" in daemon_log


@VETH_USABLE
@pytest.mark.parametrize("network", ['mode = "none"', "inherit = []"])
def test_none_and_an_empty_list_inherit_nothing(coop: Coop, network: str) -> None:
    workspace = _workspace(coop, network)
    ca, _certs = _trust_files(coop.home)
    with echo_service() as port:
        _start(coop, workspace, {"http_proxy": f"http://127.0.0.1:{port}",
                                 "SSL_CERT_FILE": str(ca)})
        shown = _shell(coop, workspace, 'echo "${http_proxy-unset}|${SSL_CERT_FILE-unset}"; '
                       "ls /run/coop 2>/dev/null || echo no-trust-dir")
        assert shown.splitlines() == ["unset|unset", "no-trust-dir"]
        reach = f"python3 -c \"$(cat <<'EOF'\n{CLIENT}EOF\n)\""
        assert _shell(coop, workspace, f"{reach} {port}").startswith("err:")
    assert "http_proxy" not in _agent_environ(coop)
    status = coop("status", cwd=workspace)
    assert "Inherited:  proj: nothing" in status.stdout.splitlines()


def test_a_workspace_turning_inheritance_on_needs_trust(coop: Coop) -> None:
    """Beyond the mode's default (none: nothing), a cloned coop.toml asking for the
    user's proxies is refused until trusted; then the session gets them."""
    workspace = _workspace(coop, 'mode = "none"\ninherit = ["proxy"]')
    secret = f"pw-{os.getpid()}-trust"
    env = {"https_proxy": f"http://me:{secret}@127.0.0.1:3128"}
    refused = subprocess.run([str(COOP), "-d"], cwd=workspace, env={**coop.env, **env},
                             capture_output=True, text=True, timeout=TIMEOUT,
                             stdin=subprocess.DEVNULL, check=False)
    assert refused.returncode == 2
    assert refused.stderr == ("error: ./coop.toml is not trusted: it asks for your proxy "
                              "settings; to allow that, run: coop trust ./coop.toml\n")
    trusted = coop("trust", cwd=workspace)
    assert trusted.returncode == 0, trusted
    assert ('[network].inherit = "proxy": passes your proxy variables (with any '
            "user:password in them) into the session") in trusted.stdout
    _start(coop, workspace, env)
    assert _shell(coop, workspace, 'echo "$https_proxy"') == env["https_proxy"]
    assert secret not in refused.stderr + trusted.stdout
    _nowhere_on_disk(coop, secret)


@VETH_USABLE
def test_a_trust_directory_holding_coop_home_shows_it_empty(coop: Coop) -> None:
    """coop's own directory never shows inside (SPEC 13), also through an inherited
    directory that holds it: it is covered there as under the workspace. Root's sandbox
    runs as coop's id range, which may not even list root's 0700 directory: the cover is
    then left out, since nothing inside may walk there either."""
    workspace = _workspace(coop, 'inherit = ["tls"]')
    holder = coop.coop_home.parent
    _start(coop, workspace, {"SSL_CERT_DIR": str(holder)})
    inside = f"/run/coop/trust/1/{holder.name}"
    shown = _shell(coop, workspace, f'echo "$SSL_CERT_DIR"; ls -1 "$SSL_CERT_DIR"; '
                   f'ls -A "$SSL_CERT_DIR/{coop.coop_home.name}" | wc -l')
    lines = shown.splitlines()
    assert lines[0] == inside
    if os.geteuid() == 0 and holder.stat().st_mode & 0o005 == 0:
        assert "Permission denied" in shown, shown
    else:
        assert {coop.coop_home.name, coop.home.name} <= set(lines[1:-1])
    assert lines[-1] == "0"
    assert list(coop.coop_home.iterdir())  # it is not empty on the host


def test_a_trust_path_no_session_may_have_is_one_line(coop: Coop) -> None:
    """As for build steps: a variable naming the kernel's files stops the start, one
    line, exit 1; nothing is started."""
    workspace = _workspace(coop, 'mode = "none"')
    proc = subprocess.run([str(COOP), "-d"], cwd=workspace,
                          env={**coop.env, "SSL_CERT_FILE": "/proc/self/environ"},
                          capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL, check=False)
    assert (proc.returncode, proc.stdout) == (0, "session proj created\n"), proc  # none: no tls
    assert coop("kill", cwd=workspace).returncode == 0
    (workspace / "coop.toml").write_text(
        (workspace / "coop.toml").read_text().replace('mode = "none"', 'mode = "host"'))
    assert coop("trust", cwd=workspace).returncode == 0
    proc = subprocess.run([str(COOP), "-d"], cwd=workspace,
                          env={**coop.env, "SSL_CERT_FILE": "/proc/self/environ"},
                          capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 1
    assert proc.stderr == ("error: SSL_CERT_FILE=/proc/self/environ: /proc is the kernel's "
                           "and is never bound into a session\n")
    assert coop("ls", cwd=workspace).stdout.count("proj") == 0
