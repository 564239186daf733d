"""The ``pasta`` runner: command line (pure) and the helper process's lifetime."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
from collections.abc import Sequence
from pathlib import Path

from coop_run.errors import NetworkError

from ._tools import run

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 2.0


def pasta_argv(ns_pid: int, *, dns_port: int, pid_file: Path,
               forward: Sequence[int] = ()) -> list[str]:
    """pasta for one sandbox: IPv4 only, no port forwarded into the sandbox, the gateway
    not mapped to the host's loopback, and from the sandbox to the host's loopback only
    its 127.0.0.1:53 (UDP+TCP) to our DNS forwarder's ``dns_port``, and the TCP ports of
    ``forward`` (an inherited proxy's) to the same ports of the host's loopback.

    pasta's own ``--dns-forward`` is not used: this version (2023-03-09) did not map the
    queries and sent them on to the literal address instead.
    """
    spec = f"53:{dns_port}"
    tcp = ",".join([spec, *(str(port) for port in forward if port != 53)])
    argv = ["pasta", "--config-net", "--ipv4-only", "--no-map-gw",
            "--tcp-ports", "none", "--udp-ports", "none",
            "--tcp-ns", tcp, "--udp-ns", spec,
            "--no-dhcp", "--dns", "none", "--quiet", "--pid", str(pid_file)]
    if os.geteuid() == 0:
        # pasta would switch to nobody, who may not enter a namespace root made.
        argv += ["--runas", "0:0"]
    return [*argv, str(ns_pid)]


def tun_usable() -> bool:
    """pasta creates a tap in the sandbox through /dev/net/tun, opened with our host uid."""
    return os.access("/dev/net/tun", os.R_OK | os.W_OK)


def start(argv: list[str], pid_file: Path) -> int:
    """Runs pasta until it has configured the namespace and gone to the background."""
    run(argv)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError) as exc:
        raise NetworkError(f"pasta did not write its pid to {pid_file}") from exc
    finally:
        with contextlib.suppress(OSError):
            pid_file.unlink()
    return pid


def stop(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """Ends pasta by its pid and waits (pidfd) until it is gone; SIGKILL after ``timeout``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError as exc:
        raise NetworkError(f"cannot open pasta process {pid}: {exc.strerror}") from exc
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                signal.pidfd_send_signal(fd, sig)
            except ProcessLookupError:
                return
            except OSError as exc:
                if exc.errno == errno.ESRCH:
                    return
                raise NetworkError(f"cannot signal pasta ({pid}): {exc.strerror}") from exc
            ready, _, _ = select.select([fd], [], [], timeout)
            if ready:
                return
        logger.warning("pasta %d did not exit after SIGKILL", pid)
    finally:
        os.close(fd)
