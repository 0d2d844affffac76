"""Waiting out something that is away (the broker, the database): growing delays between attempts,
and one log line when an outage begins and one when it ends.

Shared by the consumer, the relay and the database engine's stall probe, so every outage reads the
same in the logs whichever server it was.
"""

from __future__ import annotations

import logging
import random
import time


class Backoff:
    """Exponential backoff with jitter, capped."""

    def __init__(self, cap_seconds: float, first_seconds: float = 0.2):
        self.cap = cap_seconds
        self.first = first_seconds
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.first * (2 ** self.attempt))
        self.attempt += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0


class Outage:
    """Says once that something is away and once that it is back, however many retries lie between:
    a warning when the outage begins (with the first retry delay), an info line when it ends with how
    long it lasted, and nothing for each failed attempt in between (no traceback: it is expected)."""

    def __init__(self, logger: logging.Logger, what: str):
        self.log = logger
        self.what = what
        self.since: float | None = None

    def failed(self, exc: BaseException, delay: float) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning("%s unavailable (%s); retrying in %.1fs, then with growing delays", self.what, type(exc).__name__, delay)
        else:
            self.log.debug("%s still unavailable (%s); retrying in %.1fs", self.what, type(exc).__name__, delay)

    def recovered(self) -> None:
        if self.since is not None:
            self.log.info("%s back after %.1fs", self.what, time.monotonic() - self.since)
            self.since = None
