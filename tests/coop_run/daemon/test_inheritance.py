"""What a session inherits (daemon/inheritance.py): the plan from the client's variables
(pure), how status words each proxy's reach, and host names resolved at start."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coop_build.inherit import ProxyAddress
from coop_build.tlstrust import (
    SESSION_TRUST_DIR,
    SESSIONS,
    InheritedTrust,
    plan_trust,
    trust_requests,
)
from coop_run.daemon.inheritance import (
    plan_inheritance,
    reach_note,
    resolve_endpoints,
    session_trust,
)

SECRET = "pa55w0rd"
CLIENT = {
    "http_proxy": f"http://me:{SECRET}@127.0.0.1:3128",
    "HTTPS_PROXY": f"http://me:{SECRET}@proxy.corp:8080/",
    "no_proxy": "localhost,.corp",
    "SSL_CERT_FILE": "/home/me/ca.pem",
    "SSL_CERT_DIR": "/home/me/certs",
    "MY_TOKEN": "other",
}


def _trust() -> InheritedTrust:
    def lookup(path: str) -> tuple[str, bool] | None:
        return {"/home/me/ca.pem": ("/home/me/ca.pem", False),
                "/home/me/certs": ("/srv/certs", True)}.get(path)
    return plan_trust(trust_requests(CLIENT), lookup, inside=SESSION_TRUST_DIR,
                      audience=SESSIONS)


def test_veth_inherits_proxies_and_trust_and_opens_the_proxies() -> None:
    got = plan_inheritance(("proxy", "tls"), "veth", CLIENT, _trust(),
                           environ={"HOME": "/home/me"})
    assert got.env == {"http_proxy": CLIENT["http_proxy"], "HTTPS_PROXY": CLIENT["HTTPS_PROXY"],
                       "no_proxy": CLIENT["no_proxy"],
                       "SSL_CERT_FILE": "/run/coop/trust/1/ca.pem",
                       "SSL_CERT_DIR": "/run/coop/trust/2/certs"}
    assert got.binds == (("/home/me/ca.pem", "/run/coop/trust/1/ca.pem", False),
                         ("/srv/certs", "/run/coop/trust/2/certs", True))
    assert got.endpoints == (("127.0.0.1", 3128), ("proxy.corp", 8080))
    assert got.summary == (
        "http_proxy=http://***@127.0.0.1:3128 (veth: the host's 127.0.0.1:3128 forwarded "
        "to the session's own)",
        "no_proxy",
        "HTTPS_PROXY=http://***@proxy.corp:8080/ (veth: port 8080 of its IPv4 addresses opened)",
        "SSL_CERT_FILE: ~/ca.pem at /run/coop/trust/1/ca.pem (read-only)",
        "SSL_CERT_DIR: /srv/certs at /run/coop/trust/2/certs (read-only)",
    )
    assert SECRET not in "".join(got.summary)
    assert "MY_TOKEN" not in got.env


def test_what_is_not_inherited_is_not_passed() -> None:
    only_tls = plan_inheritance(("tls",), "veth", CLIENT, _trust())
    assert set(only_tls.env) == {"SSL_CERT_FILE", "SSL_CERT_DIR"} and not only_tls.endpoints
    only_proxy = plan_inheritance(("proxy",), "host", CLIENT, _trust())
    assert set(only_proxy.env) == {"http_proxy", "HTTPS_PROXY", "no_proxy"}
    assert only_proxy.binds == () and only_proxy.endpoints == ()  # host: nothing to open
    nothing = plan_inheritance((), "veth", CLIENT, _trust())
    assert (nothing.env, nothing.binds, nothing.endpoints, nothing.summary) == ({}, (), (), ())


@pytest.mark.parametrize(("address", "mode", "note"), [
    (ProxyAddress("127.0.0.1", 3128), "host", ""),
    (ProxyAddress("127.0.0.1", 3128), "none", " (not reachable: no network)"),
    (ProxyAddress("localhost", 3128), "veth",
     " (veth: the host's 127.0.0.1:3128 forwarded to the session's own)"),
    (ProxyAddress("127.0.0.2", 3128), "veth", " (not reachable from veth: only the host's "
     "127.0.0.1 is forwarded, port 53 excepted)"),
    (ProxyAddress("127.0.0.1", 53), "veth", " (not reachable from veth: only the host's "
     "127.0.0.1 is forwarded, port 53 excepted)"),
    (ProxyAddress("::1", 3128), "veth", " (not reachable from veth: sessions have no IPv6)"),
    (ProxyAddress("10.1.2.3", 8080), "veth", " (veth: 10.1.2.3:8080 opened)"),
    (ProxyAddress("8.8.8.8", 8080), "veth", ""),  # public: reachable anyway
    (None, "veth", " (not understood: nothing opened for it)"),
])
def test_reach_note(address: ProxyAddress | None, mode: str, note: str) -> None:
    assert reach_note(address, mode) == note


def test_names_resolve_to_ipv4_and_a_slow_name_is_a_warning() -> None:
    async def run() -> None:
        opened, warnings = await resolve_endpoints([("10.1.2.3", 80), ("localhost", 3128)])
        assert opened == [("10.1.2.3", 80), ("127.0.0.1", 3128)] and warnings == []
        opened, warnings = await resolve_endpoints([("localhost", 3128)], timeout=0)
        assert opened == []
        assert warnings == ["proxy host localhost does not resolve (timed out): nothing "
                            "opened for it in the session's network"]
    asyncio.run(run())


def test_session_trust_reads_only_the_clients_variables(tmp_path: Path) -> None:
    """The daemon's own SSL_CERT_FILE is not the user's: only what the client sent
    counts, and the user's npmrc comes from HOME."""
    ca = tmp_path / "ca.pem"
    ca.write_text("CA\n")
    (tmp_path / ".npmrc").write_text(f"cafile={ca}\n")
    trust = session_trust({"PIP_CERT": str(ca)}, home=str(tmp_path),
                          coop_home=tmp_path / "coop")
    assert dict(trust.env) == {"PIP_CERT": "/run/coop/trust/1/ca.pem",
                               "npm_config_cafile": "/run/coop/trust/1/ca.pem"}
    assert trust.binds == ((str(ca), "/run/coop/trust/1/ca.pem"),)
    assert dict(session_trust({}, home=None, coop_home=tmp_path).env) == {}
