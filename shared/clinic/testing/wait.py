"""Asynchronous assertions: poll until a condition holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, message: str = "") -> T:
    """Call `check` until it returns a truthy value (returned) or stops raising AssertionError.

    Fails with the last assertion or a timeout message naming what was awaited.
    """
    deadline = time.monotonic() + timeout
    last_error: AssertionError | None = None
    while True:
        try:
            result = check()
            if result:
                return result
            last_error = None
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            what = message or getattr(check, "__name__", "condition")
            if last_error is not None:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last_error}") from last_error
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last result: {result!r})")
        time.sleep(interval)
