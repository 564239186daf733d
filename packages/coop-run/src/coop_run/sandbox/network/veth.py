"""What both ``veth`` flavours share: removing what a session's record names, and the
close that goes with it.

A record (``state.NetState``) names every object a veth session made: the pasta helper
(rootless), the link pair and the nft table (root). ``teardown`` removes whichever are
named, so a session's own close and ``reap_stale`` after its owner died run the same
steps, whichever flavour made them.
"""

from __future__ import annotations

from coop_build.paths import CoopPaths
from coop_run.procs import alive

from . import ip, nft, pasta
from .dns import DnsForwarder
from .state import NetState, remove_state


def teardown(state: NetState) -> None:
    """Stop the pasta helper a record names (if it is still that very process), delete its
    link pair and its nft table; missing ones are fine."""
    if state.helper_pid is not None and alive(state.helper_pid, state.helper_start):
        pasta.stop(state.helper_pid)
    if state.link:
        ip.batch([f"link del dev {state.link}"], force=True)
    if state.table:
        nft.delete_tables([("inet", state.table)])


class VethSession:
    """The part of a veth mode that ``close`` undoes: its DNS forwarder and its record."""

    def __init__(self, *, session: str, paths: CoopPaths) -> None:
        self.session = session
        self.paths = paths
        self.state: NetState | None = None
        self.forwarder: DnsForwarder | None = None

    def close(self) -> None:
        """Remove everything ``attach`` made; idempotent."""
        if self.forwarder is not None:
            self.forwarder.close()
            self.forwarder = None
        if self.state is not None:
            teardown(self.state)
            remove_state(self.paths, self.session)
            self.state = None
