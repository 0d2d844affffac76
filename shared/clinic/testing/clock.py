"""A clock for tests: the app's or the worker's `clock`, fixed at a moment until the test moves it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


class Clock:
    """Called as the services call their clock: the current UTC time, here the moment the test set."""

    def __init__(self, moment: datetime):
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment.astimezone(timezone.utc)

    def set(self, moment: datetime) -> None:
        self.moment = moment

    def advance(self, **delta) -> None:
        """Move the clock on, e.g. advance(minutes=121)."""
        self.moment = self.moment + timedelta(**delta)
