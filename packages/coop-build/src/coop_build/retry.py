"""The registry client's one retry policy: how often to try again and how long to wait.

Pure: the policy says how long to pause, the client sleeps. One budget covers a whole
operation (a request with its redirects and its auth round trip, or a blob download with
its resumptions and the requests they make), so retries never multiply across layers.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Answers that say "try again later" (rate limit, gateway and server trouble).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """An operation gives up at its ``attempts``-th failed try; after the n-th, it waits
    ``backoff * n`` seconds before the next.

    Worst case with the defaults: 3 failed tries and 0.25 + 0.5 = 0.75 s of waiting in all
    (``max_wait``), on top of each try's own timeouts (the client's: 5 s to connect, 60 s
    between bytes). Tries that do not fail (a redirect, the 401 that asks for a token) are
    not retries and are bounded by the client (6 redirects, one auth round). A short
    outage of a second or so is ridden out; a refused port fails in well under a second,
    where oras-py's own retries take minutes.

    What counts as a failed try is the client's call: a network error (not a TLS one:
    that will not heal), an answer in ``statuses``, a blob body that ended early.
    """

    attempts: int = 3
    backoff: float = 0.25
    statuses: frozenset[int] = RETRY_STATUSES

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff < 0:
            raise ValueError(f"bad retry policy: {self.attempts} attempts, {self.backoff} s")

    def pause_after(self, failures: int) -> float | None:
        """The pause before the next try once ``failures`` tries have failed; ``None``
        when none is left."""
        if failures >= self.attempts:
            return None
        return self.backoff * failures

    @property
    def max_wait(self) -> float:
        """The most one operation waits between its tries, in seconds."""
        return sum(self.backoff * n for n in range(1, self.attempts))

    def budget(self) -> RetryBudget:
        """A fresh count of failures, for one operation."""
        return RetryBudget(self)


class RetryBudget:
    """The failures of one operation so far, counted against its policy."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0

    def spend(self) -> float | None:
        """Count one failed try; the seconds to pause before the next, ``None`` when the
        operation must give up (the caller then reports the last failure)."""
        self.failures += 1
        return self.policy.pause_after(self.failures)
