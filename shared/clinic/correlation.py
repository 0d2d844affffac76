"""The correlation id of whatever is being handled now: an HTTP request or a consumed event.

Kept in a context variable so that the outbox can stamp it on every event the
work causes without each layer passing it along.
"""

import contextvars
import uuid

_current = contextvars.ContextVar("correlation_id", default=None)


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def current_correlation_id() -> str | None:
    return _current.get()


def set_correlation_id(value: str | None):
    """Set the id; returns a token for reset_correlation_id."""
    return _current.set(value)


def reset_correlation_id(token) -> None:
    _current.reset(token)
