"""The correlation id of whatever is being handled now: an HTTP request or a consumed event.

Kept in a context variable so that the outbox can stamp it on every event the
work causes without each layer passing it along.
"""

import contextvars
import re
import uuid

_current = contextvars.ContextVar("correlation_id", default=None)

# What a caller may hand us as its correlation id: a UUID, with or without hyphens or braces.
_UUID_LIKE = re.compile(r"\{?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\}?")


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def accepted_correlation_id(offered: str | None) -> str:
    """The caller's correlation id when it is a UUID (in its canonical form), else a new one.

    It is logged on every line and stored in the audit and in every event the work causes: free text
    there could forge log lines or smuggle data, so anything else is replaced, not cleaned."""
    if offered and len(offered) <= 38 and _UUID_LIKE.fullmatch(offered):
        return str(uuid.UUID(offered.strip("{}")))
    return new_correlation_id()


def current_correlation_id() -> str | None:
    return _current.get()


def set_correlation_id(value: str | None):
    """Set the id; returns a token for reset_correlation_id."""
    return _current.set(value)


def reset_correlation_id(token) -> None:
    _current.reset(token)
