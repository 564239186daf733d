"""The network test topology: an "internet" host and a "LAN" host, each a netns made here.

    coopt-inet  198.51.100.1/24 (TEST-NET-2)   host route 198.51.100.0/24 dev coopt-inet-h
                (host end has no address: for the host it is not on-link, like the internet)
    coopt-lan   192.168.213.1/24 + 169.254.213.1/24, host end .2 of both (on-link LAN)

Each runs netserver.py (TCP 80 banner, DNS on 53). Only these namespaces' own veths carry
routes; nothing here ever points at another address. Creating it needs root: the root test
run makes it itself (fixture), the unprivileged run needs ``scripts/prepare-test-network up``
run as root first (and ``down`` afterwards). ``up`` also makes /dev/net/tun 0666 (Debian's
udev default; this machine has 0600), which rootless pasta needs; ``down`` restores it.

    python3 tests/coop_run/sandbox/network/net_topology.py up|down|check
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATE = Path("/run/coop-test-net")
NS_INET, NS_LAN = "coopt-inet", "coopt-lan"
LINK_INET, LINK_LAN = "coopt-inet-h", "coopt-lan-h"
INET_ADDR = "198.51.100.1"
LAN_ADDR = "192.168.213.1"
LAN_HOST_END = "192.168.213.2"
LINKLOCAL_ADDR = "169.254.213.1"
TUN = Path("/dev/net/tun")
FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
READY_TIMEOUT = 10.0


def _ip(*script: str, ns: str | None = None) -> None:
    subprocess.run(["ip", *(["-n", ns] if ns else []), "-batch", "-"],
                   input="\n".join(script) + "\n", text=True, check=True, capture_output=True)


def reachable(addr: str, port: int = 80, timeout: float = 1.0) -> bool:
    """From the host: does the test server at ``addr`` answer?"""
    try:
        with socket.create_connection((addr, port), timeout=timeout) as conn:
            return bool(conn.recv(64))
    except OSError:
        return False


def present() -> bool:
    return (Path("/run/netns") / NS_INET).exists() and all(
        reachable(a) for a in (INET_ADDR, LAN_ADDR, LINKLOCAL_ADDR))


def _start_server(ns: str, name: str) -> int:
    """A server that outlives this process (``down`` stops it by pid): spawned, not a
    ``Popen`` that would be collected while it runs."""
    argv = ["ip", "netns", "exec", ns, "/usr/bin/python3", str(HERE / "netserver.py"), name]
    log = STATE / f"{name}.log"
    pid = os.posix_spawnp(argv[0], argv, os.environ, setsid=True, file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2)])
    (STATE / f"{name}.pid").write_text(str(pid))
    return pid


def up() -> list[int]:
    """Creates everything (tearing down leftovers first); returns the server pids."""
    down()
    STATE.mkdir(mode=0o755, exist_ok=True)
    (STATE / "tun-mode").write_text(oct(TUN.stat().st_mode & 0o777))
    (STATE / "ip-forward").write_text(FORWARD.read_text().strip())
    TUN.chmod(0o666)
    subprocess.run(["ip", "netns", "add", NS_INET], check=True)
    subprocess.run(["ip", "netns", "add", NS_LAN], check=True)
    _ip(f"link add {LINK_INET} type veth peer name eth0 netns {NS_INET}",
        f"link set {LINK_INET} addrgenmode none",
        f"link set {LINK_INET} up",
        f"route add 198.51.100.0/24 dev {LINK_INET}",
        f"link add {LINK_LAN} type veth peer name eth0 netns {NS_LAN}",
        f"link set {LINK_LAN} addrgenmode none",
        f"addr add {LAN_HOST_END}/24 dev {LINK_LAN}",
        f"addr add 169.254.213.2/24 dev {LINK_LAN}",
        f"link set {LINK_LAN} up")
    _ip("link set lo up", "link set eth0 addrgenmode none",
        f"addr add {INET_ADDR}/24 dev eth0", "link set eth0 up",
        "route add default dev eth0", ns=NS_INET)
    _ip("link set lo up", "link set eth0 addrgenmode none",
        f"addr add {LAN_ADDR}/24 dev eth0",
        f"addr add {LINKLOCAL_ADDR}/24 dev eth0", "link set eth0 up", ns=NS_LAN)
    pids = [_start_server(NS_INET, "internet"), _start_server(NS_LAN, "lan")]
    deadline = time.monotonic() + READY_TIMEOUT
    while not present():
        if time.monotonic() > deadline:
            down()
            raise RuntimeError("test topology servers did not answer")
        time.sleep(0.05)
    return pids


def down() -> None:
    """Removes everything by name and pid; safe to run when nothing is there."""
    for name in ("internet", "lan"):
        pid_file = STATE / f"{name}.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if "netserver.py" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
        pid_file.unlink(missing_ok=True)
    for link in (LINK_INET, LINK_LAN):
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
    for ns in (NS_INET, NS_LAN):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    with contextlib.suppress(OSError, ValueError):
        TUN.chmod(int((STATE / "tun-mode").read_text(), 8))
        (STATE / "tun-mode").unlink()
    with contextlib.suppress(OSError):
        FORWARD.write_text((STATE / "ip-forward").read_text() + "\n")
        (STATE / "ip-forward").unlink()
    for name in ("internet.log", "lan.log"):
        (STATE / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        STATE.rmdir()


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "up":
        up()
    elif command == "down":
        down()
    elif command == "check":
        sys.exit(0 if present() else 1)
    else:
        sys.exit("usage: net_topology.py up|down|check")
