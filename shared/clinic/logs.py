"""Logging set up once per process, with the correlation id on every line.

Log identifiers (event ids, appointment ids), never names, contact details or clinical notes.
A message is always one line: control characters in it (a newline from a decoded URL, an exception
naming what a caller sent) are written as escapes, so nothing a caller sends can forge a line.
"""

import logging
import re
import traceback

from clinic.config import Settings
from clinic.correlation import current_correlation_id

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def one_line(text: str) -> str:
    """`text` with every control character (and Unicode line separator) written as an escape."""
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


class _CorrelationFilter(logging.Filter):
    def filter(self, record):
        record.correlation_id = current_correlation_id() or "-"
        return True


class OneLineFormatter(logging.Formatter):
    """A formatter whose message part never spans lines (a traceback still follows on its own lines),
    and whose tracebacks never quote a database's error text (see withheld)."""

    def formatMessage(self, record):
        record.message = one_line(record.message)
        return super().formatMessage(record)

    def formatException(self, ei):
        return traceback_without_values(ei[1])


def withheld(exc: BaseException) -> bool:
    """True for an error whose text may quote patient data: the database's own errors, whose detail
    repeats the row it refused ("Failing row contains (…, 'Maria', 'Silva', …)")."""
    module = type(exc).__module__
    return module.startswith(("psycopg", "sqlite3", "sqlalchemy.exc"))


def traceback_without_values(exc: BaseException | None) -> str:
    """The traceback of `exc` and the errors it came from, as Python prints it, except that the text of
    a database error is replaced by its kind and SQLSTATE: where it failed stays, what it held does not."""
    if exc is None:
        return ""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    parts = []
    for item in reversed(chain):
        kind = f"{type(item).__module__}.{type(item).__qualname__}"
        if withheld(item):
            sqlstate = getattr(item, "sqlstate", None) or getattr(getattr(item, "orig", None), "sqlstate", None)
            text = f"{kind} (SQLSTATE {sqlstate or 'none'}; its text is not logged, it may quote patient data)"
        else:
            text = "".join(traceback.format_exception_only(type(item), item)).rstrip()
        parts.append("Traceback (most recent call last):\n" + "".join(traceback.format_tb(item.__traceback__)) + text)
    return "\n\nThe error above led to:\n\n".join(parts)


def configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    if getattr(root, "_clinic_configured", False):
        return
    handler = logging.StreamHandler()
    handler.addFilter(_CorrelationFilter())
    handler.setFormatter(
        OneLineFormatter(f"%(asctime)s %(levelname)s {settings.service} [%(correlation_id)s] %(name)s: %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # pika logs each failed connection attempt with a traceback; those failures are expected during a
    # broker outage, and the consumer and the relay say once when it begins and once when it ends.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    root._clinic_configured = True
