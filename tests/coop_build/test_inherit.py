"""What build steps and sessions inherit apart from TLS trust: the proxy variables, a
proxy URL's host and port, and its only shown form, masked (pure)."""

from __future__ import annotations

import pytest

from coop_build.build import PASSTHROUGH_VARS
from coop_build.inherit import (
    DEFAULT_INHERIT,
    MIRROR_VARS,
    PROXY_URL_VARS,
    PROXY_VARS,
    ProxyAddress,
    masked,
    proxy_address,
    proxy_variables,
)


def test_proxy_variables_both_spellings_and_no_mirrors() -> None:
    environ = {"http_proxy": "http://p:1", "HTTPS_PROXY": "http://p:2", "no_proxy": "x",
               "NO_PROXY": "", "PIP_INDEX_URL": "https://mirror/", "ALL": "y"}
    assert proxy_variables(environ) == {"http_proxy": "http://p:1",
                                        "HTTPS_PROXY": "http://p:2", "no_proxy": "x"}
    assert set(PROXY_URL_VARS) == {"http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"}
    # Build steps get both families, in the order they always had.
    assert PASSTHROUGH_VARS[: len(PROXY_VARS)] == PROXY_VARS
    assert PASSTHROUGH_VARS[len(PROXY_VARS):] == MIRROR_VARS == (
        "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "npm_config_registry")
    assert DEFAULT_INHERIT == {"veth": ("proxy", "tls"), "host": ("proxy", "tls"), "none": ()}


@pytest.mark.parametrize(("url", "shown"), [
    ("http://user:pa55@proxy.corp:3128", "http://***@proxy.corp:3128"),
    ("http://user:pa55@proxy.corp:3128/", "http://***@proxy.corp:3128/"),
    ("HTTP://user@10.0.0.1:8080", "http://***@10.0.0.1:8080"),
    ("user:p%40ss@127.0.0.1:3128", "***@127.0.0.1:3128"),
    ("http://us@r:p@ss@proxy:3128", "http://***@proxy:3128"),  # unencoded @: hide more
    ("  http://proxy:3128  ", "http://proxy:3128"),
    ("http://proxy:3128", "http://proxy:3128"),
])
def test_masked_hides_every_user_and_password(url: str, shown: str) -> None:
    assert masked(url) == shown
    assert "pa55" not in masked(url) and "p%40ss" not in masked(url)


@pytest.mark.parametrize(("url", "address"), [
    ("http://proxy.corp:3128", ProxyAddress("proxy.corp", 3128)),
    ("http://u:p@127.0.0.1:3128/", ProxyAddress("127.0.0.1", 3128)),
    ("proxy:8080", ProxyAddress("proxy", 8080)),
    ("http://Proxy.Corp", ProxyAddress("proxy.corp", 80)),
    ("https://proxy", ProxyAddress("proxy", 443)),
    ("socks5h://localhost", ProxyAddress("localhost", 1080)),
    ("http://[::1]:3128", ProxyAddress("::1", 3128)),
    ("http://[::1]", ProxyAddress("::1", 80)),
    ("http://proxy:3128?x#y", ProxyAddress("proxy", 3128)),
    ("ftp://proxy:21", None),
    ("http://:3128", None),
    ("http://proxy:0", None),
    ("http://proxy:65536", None),
    ("http://proxy:31x", None),
    ("http://[::1", None),
    ("", None),
])
def test_proxy_address(url: str, address: ProxyAddress | None) -> None:
    assert proxy_address(url) == address
