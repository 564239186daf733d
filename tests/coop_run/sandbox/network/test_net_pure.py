"""Pure parts of the network modes: refused ranges, nft text, slots, state, DNS forwarder."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator

import netserver
import pytest

from coop_build.paths import CoopPaths
from coop_run.errors import NetworkError
from coop_run.procs import alive, proc_start_time
from coop_run.sandbox.network import rules
from coop_run.sandbox.network._tools import tool_path
from coop_run.sandbox.network.dns import DnsForwarder, is_query, parse_nameservers
from coop_run.sandbox.network.modes import network_for
from coop_run.sandbox.network.pasta import pasta_argv
from coop_run.sandbox.network.state import NetState
from coop_run.sandbox.network.veth_root import choose_slot, link_slot, slot_addresses

N = ipaddress.IPv4Network


def test_refused_networks_cover_private_ranges_and_collapse() -> None:
    nets = rules.refused_networks([N("192.0.2.0/24"), N("10.1.0.0/16")],
                                  [ipaddress.IPv4Address("192.0.2.2")])
    for addr in ("10.1.2.3", "172.20.0.1", "192.168.1.1", "100.64.0.1", "169.254.1.1",
                 "127.0.0.1", "224.0.0.1", "255.255.255.255", "192.0.2.77"):
        assert any(ipaddress.IPv4Address(addr) in n for n in nets), addr
    assert not any(ipaddress.IPv4Address("198.51.100.1") in n for n in nets)
    assert N("192.0.2.2/32") not in nets and N("10.1.0.0/16") not in nets  # collapsed


def _nft_check(text: str) -> None:
    """Loads the text for real in a throwaway user+net namespace (works for any user)."""
    argv = ["unshare", "--user", "--map-root-user", "--net", tool_path("nft"), "-f", "-"]
    proc = subprocess.run(argv, input=text, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_root_table_loads_and_names_the_session_link() -> None:
    text = rules.root_table(table="coop_7", link="coop7",
                            host_ip=ipaddress.IPv4Address("10.89.0.29"),
                            sandbox_ip=ipaddress.IPv4Address("10.89.0.30"),
                            refused=rules.refused_networks([N("192.0.2.0/24")]),
                            session="my-sess")
    _nft_check(text)
    assert 'iifname "coop7" jump from_session' in text
    assert "udp dport 53 accept" in text and "masquerade" in text
    assert "coop session my-sess" in text


def test_inside_table_loads() -> None:
    _nft_check(rules.inside_table(refused=rules.refused_networks()))


def test_proxy_openings_are_exactly_the_inherited_proxies() -> None:
    """The host's 127.0.0.1 ports to forward (53 is the session's DNS), the refused
    (address, port) pairs to open; public addresses need nothing, and anything else
    (other loopback addresses, host names, IPv6, bad ports) opens nothing."""
    refused = rules.refused_networks([N("192.0.2.0/24")])
    ports, opened = rules.proxy_openings(
        [("127.0.0.1", 3128), ("127.0.0.1", 3128), ("127.0.0.1", 53), ("127.0.0.2", 8080),
         ("192.168.1.5", 8080), ("192.0.2.7", 3128), ("10.0.0.1", 0), ("198.51.100.9", 80),
         ("proxy.corp", 3128), ("::1", 3128)], refused)
    assert ports == [3128]
    assert opened == [(ipaddress.IPv4Address("192.168.1.5"), 8080),
                      (ipaddress.IPv4Address("192.0.2.7"), 3128)]
    assert rules.proxy_openings([], refused) == ([], [])


def test_opened_proxies_load_and_come_before_the_refusal() -> None:
    """Each opened pair is one accept for its TCP port before the refused set (forwarded
    and, for the host's own addresses, delivered); without any the text is as before."""
    opened = [(ipaddress.IPv4Address("192.168.1.5"), 8080)]
    args = dict(table="coop_7", link="coop7", host_ip=ipaddress.IPv4Address("10.89.0.29"),
                sandbox_ip=ipaddress.IPv4Address("10.89.0.30"),
                refused=rules.refused_networks())
    text = rules.root_table(**args, opened=opened)
    _nft_check(text)
    lines = [line.strip() for line in text.splitlines()]
    forwarded = lines.index("ip daddr 192.168.1.5 tcp dport 8080 accept")
    assert forwarded < next(i for i, line in enumerate(lines) if line.startswith(
        "ip daddr {") and "reject" in line)
    delivered = lines.index('iifname "coop7" ip saddr 10.89.0.30 ip daddr 192.168.1.5 '
                            "tcp dport 8080 accept")
    assert delivered < lines.index('iifname "coop7" meta nfproto ipv4 reject with icmpx '
                                   "admin-prohibited")
    assert sum("8080" in line for line in lines) == 2
    plain = rules.root_table(**args)
    assert [line for line in text.splitlines() if "8080" not in line] == plain.splitlines()
    inside = rules.inside_table(refused=rules.refused_networks(), opened=opened)
    _nft_check(inside)
    assert [line for line in inside.splitlines() if "8080" not in line] == \
        rules.inside_table(refused=rules.refused_networks()).splitlines()
    assert "        ip daddr 192.168.1.5 tcp dport 8080 accept\n        ip daddr {" in inside


def test_session_name_never_reaches_nft_unquoted() -> None:
    text = rules.root_table(table="t", link="l", host_ip=ipaddress.IPv4Address("10.0.0.1"),
                            sandbox_ip=ipaddress.IPv4Address("10.0.0.2"), refused=[],
                            session='x" ; flush ruleset')
    assert "flush" not in text


def test_slots() -> None:
    subnet = N("10.89.0.0/16")
    assert slot_addresses(subnet, 0)[1:] == (ipaddress.IPv4Address("10.89.0.1"),
                                             ipaddress.IPv4Address("10.89.0.2"))
    assert str(slot_addresses(subnet, 300)[0]) == "10.89.4.176/30"
    assert choose_slot(subnet, set(), []) == 0
    assert choose_slot(subnet, {0, 1}, []) == 2
    # A host route inside our range blocks its slots; a broader one does not.
    assert choose_slot(subnet, set(), [N("10.89.0.0/29"), N("10.0.0.0/8")]) == 2
    with pytest.raises(NetworkError):
        choose_slot(subnet, set(), [N("10.89.0.0/16")])
    with pytest.raises(NetworkError):
        slot_addresses(subnet, 16384)
    assert link_slot("coop12") == 12 and link_slot("coop12p") == 12
    assert link_slot("coopt-inet-h") is None and link_slot("eth0") is None


def test_state_round_trip_and_rejects_garbage() -> None:
    state = NetState.for_current_process("veth-root", "s1")
    state.slot, state.link, state.table = 3, "coop3", "coop_3"
    assert NetState.from_json(state.to_json()) == state
    assert alive(state.owner_pid, state.owner_start)
    assert not alive(state.owner_pid, state.owner_start + 1)  # a reused pid is not us
    assert proc_start_time(2**22 + 1) is None
    for bad in ("", "[]", '{"version": 9}', '{"version": 1, "mode": "x"}',
                '{"version": 1, "mode": "x", "session": "s", "owner_pid": "1", '
                '"owner_start": 1}'):
        with pytest.raises(NetworkError):
            NetState.from_json(bad)


def test_parse_nameservers() -> None:
    text = ("# comment\nnameserver 127.0.0.53\nsearch example\nnameserver fe80::1%eth0\n"
            "nameserver not-an-ip\n  nameserver 10.255.255.53 # lan\noptions edns0\n")
    assert parse_nameservers(text) == ["127.0.0.53", "fe80::1", "10.255.255.53"]


def test_pasta_argv_opens_only_dns_towards_the_host(tmp_path: object) -> None:
    argv = pasta_argv(1234, dns_port=40053, pid_file=__import__("pathlib").Path("/x"))
    assert argv[-1] == "1234"
    for opt, value in (("--tcp-ports", "none"), ("--udp-ports", "none"),
                       ("--tcp-ns", "53:40053"), ("--udp-ns", "53:40053")):
        assert argv[argv.index(opt) + 1] == value
    assert "--no-map-gw" in argv and "--ipv4-only" in argv
    # An inherited proxy's port of the host's loopback: TCP only, same port, never 53.
    argv = pasta_argv(1234, dns_port=40053, pid_file=__import__("pathlib").Path("/x"),
                      forward=[3128, 53, 8080])
    assert argv[argv.index("--tcp-ns") + 1] == "53:40053,3128,8080"
    assert argv[argv.index("--udp-ns") + 1] == "53:40053"


def test_unknown_mode_is_refused(tmp_path: object) -> None:
    with pytest.raises(NetworkError, match="unknown network mode"):
        network_for("bridge", session="s", paths=CoopPaths(__import__("pathlib").Path("/x")))


# -- the forwarder, against a resolver on loopback ---------------------------------------

def _query(name: str, ident: int = 0x1234) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


@pytest.fixture
def upstream() -> Iterator[tuple[str, int]]:
    """A DNS server (netserver.answer) on 127.0.0.1, UDP and TCP on one port."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", port))
    tcp.listen(4)
    stop = threading.Event()

    def serve_udp() -> None:
        while not stop.is_set():
            try:
                data, peer = udp.recvfrom(4096)
            except OSError:
                return
            if peer is None:  # woken by shutdown() at teardown
                return
            udp.sendto(netserver.answer(data), peer)

    def serve_tcp() -> None:
        while not stop.is_set():
            try:
                conn, _ = tcp.accept()
            except OSError:
                return
            with conn:
                size = struct.unpack("!H", conn.recv(2))[0]
                reply = netserver.answer(conn.recv(size))
                conn.sendall(struct.pack("!H", len(reply)) + reply)

    threads = [threading.Thread(target=f, daemon=True) for f in (serve_udp, serve_tcp)]
    for t in threads:
        t.start()
    yield "127.0.0.1", port
    # Wake and join the servers BEFORE closing their sockets: a thread still inside
    # recvfrom() on a closed fd number would read from whatever reuses that number next
    # (it once swallowed a later test's sandbox control messages).
    stop.set()
    for sock in (udp, tcp):
        # An unconnected UDP socket answers ENOTCONN, yet the blocked reader is woken.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    for t in threads:
        t.join(timeout=5)
        assert not t.is_alive(), "a DNS test server thread did not stop"
    udp.close()
    tcp.close()


def test_forwarder_udp_tcp_and_fallback(upstream: tuple[str, int]) -> None:
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    dead.bind(("127.0.0.1", 0))
    fwd = DnsForwarder("127.0.0.1", [dead.getsockname(), upstream], port=0, timeout=0.3)
    fwd.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as cli:
            cli.settimeout(5)
            cli.sendto(b"garbage", ("127.0.0.1", fwd.port))  # ignored, not fatal
            cli.sendto(_query("internet.coop.test"), ("127.0.0.1", fwd.port))
            reply = cli.recv(4096)
        assert reply[:2] == b"\x12\x34" and reply[-4:] == socket.inet_aton("198.51.100.1")
        with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as conn:
            q = _query("nope.coop.test", 0x4321)
            conn.sendall(struct.pack("!H", len(q)) + q)
            size = struct.unpack("!H", conn.recv(2))[0]
            reply = conn.recv(size)
        assert reply[:2] == b"\x43\x21" and reply[3] & 0x0F == 3
    finally:
        fwd.close()
        dead.close()
    fwd.close()  # idempotent
    assert not [t for t in threading.enumerate() if t.name.startswith("dns")]


def test_is_query() -> None:
    assert is_query(_query("a.b"))
    assert not is_query(b"\x00" * 11)
    assert not is_query(b"\x00\x00\x80" + b"\x00" * 9)  # an answer, not a query
