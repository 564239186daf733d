"""The registry client's retry policy: pure arithmetic, then its budget on a loopback server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from coop_build.errors import RegistryError
from coop_build.registry import RegistryClient
from coop_build.retry import RETRY_STATUSES, RetryPolicy


def test_default_worst_case_is_three_tries_and_three_quarters_of_a_second() -> None:
    policy = RetryPolicy()
    assert (policy.attempts, policy.max_wait) == (3, 0.75)  # what its docstring states
    assert [policy.pause_after(n) for n in range(5)] == [0.0, 0.25, 0.5, None, None]
    assert policy.statuses == RETRY_STATUSES == {429, 500, 502, 503, 504}


@pytest.mark.parametrize(("attempts", "backoff"), [(1, 0.0), (2, 1.0), (5, 0.1)])
def test_a_budget_hands_out_attempts_minus_one_pauses_summing_to_max_wait(
    attempts: int, backoff: float
) -> None:
    policy = RetryPolicy(attempts=attempts, backoff=backoff)
    budget = policy.budget()
    pauses = []
    while (pause := budget.spend()) is not None:
        pauses.append(pause)
    assert len(pauses) == attempts - 1
    assert sum(pauses) == pytest.approx(policy.max_wait)
    assert pauses == sorted(pauses)  # never shorter than the one before
    assert budget.spend() is None  # spent stays spent
    assert policy.budget().spend() == (None if attempts == 1 else backoff)  # budgets are apart


@pytest.mark.parametrize(("attempts", "backoff"), [(0, 0.25), (3, -1.0)])
def test_a_policy_that_cannot_work_is_refused(attempts: int, backoff: float) -> None:
    with pytest.raises(ValueError, match="bad retry policy"):
        RetryPolicy(attempts=attempts, backoff=backoff)


# -- the client spends one budget per request, its token request included ---------------


class _Busy(BaseHTTPRequestHandler):
    """Answers 503 to everything; with ``challenge`` set, /v2/ asks for a bearer token
    (from /token on the same server) once it has answered 503 ``busy_first`` times, so a
    request makes token requests too."""

    challenge = False
    busy_first = 0
    paths: list[str]

    def do_GET(self) -> None:
        self.paths.append(self.path)
        v2_seen = sum(p.startswith("/v2/") for p in self.paths)
        if self.challenge and self.path.startswith("/v2/") and v2_seen > self.busy_first:
            host, port = self.server.server_address[:2]
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://{host}:{port}/token"')
        else:
            self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def busy() -> Iterator[tuple[str, type[_Busy]]]:
    handler = type("Handler", (_Busy,), {"paths": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_busy_registry_gets_exactly_the_policys_tries(busy: tuple[str, type[_Busy]]) -> None:
    host, handler = busy
    client = RegistryClient(host, environ={}, retry=RetryPolicy(attempts=4, backoff=0.0))
    with pytest.raises(RegistryError, match="HTTP 503"):
        client.get_manifest("library/busybox", "1")
    assert handler.paths == ["/v2/library/busybox/manifests/1"] * 4


def test_the_token_request_shares_the_budget(busy: tuple[str, type[_Busy]]) -> None:
    host, handler = busy
    handler.challenge = True
    handler.busy_first = 1
    client = RegistryClient(host, environ={}, retry=RetryPolicy(attempts=3, backoff=0.0))
    with pytest.raises(RegistryError, match=r"token service .* answered HTTP 503"):
        client.get_manifest("library/busybox", "1")
    # 503 (the first failure), then 401 (an answer, not a failure), then the token
    # service fails twice: three failures, the policy's budget for the whole request
    manifest = "/v2/library/busybox/manifests/1"
    assert [p.split("?")[0] for p in handler.paths] == [manifest, manifest, "/token", "/token"]
