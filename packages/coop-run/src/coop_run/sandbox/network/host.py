"""``host``: the sandbox shares the host's network stack and its resolver configuration."""

from __future__ import annotations

from pathlib import Path

from coop_run.errors import NetworkError

HOST_RESOLV = Path("/etc/resolv.conf")


class HostNetwork:
    """No namespace of its own: nothing to attach, nothing to remove."""

    unshare_net = False
    net_raw_safe = True  # CAP_NET_RAW inside is not CAP_NET_RAW over the host's netns

    def __init__(self, resolv_path: Path = HOST_RESOLV) -> None:
        self.resolv_path = resolv_path

    def resolv_conf(self) -> str:
        """The host's resolv.conf as it is now (a copy: the sandbox cannot change the host's)."""
        try:
            return self.resolv_path.read_text()
        except OSError as exc:
            raise NetworkError(f"cannot read {self.resolv_path}: {exc.strerror}") from exc

    def attach(self, ns_pid: int) -> None:
        """Never needed (no namespace); accepted so callers need no special case."""

    def close(self) -> None:
        """Nothing to remove."""
