"""Logging set up once per process, with the correlation id on every line.

Log identifiers (event ids, appointment ids), never names, contact details or clinical notes.
A message is always one line: control characters in it (a newline from a decoded URL, an exception
naming what a caller sent) are written as escapes, so nothing a caller sends can forge a line.
"""

import logging
import re

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
    """A formatter whose message part never spans lines (a traceback still follows on its own lines)."""

    def formatMessage(self, record):
        record.message = one_line(record.message)
        return super().formatMessage(record)


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
    logging.getLogger("pika").setLevel(logging.WARNING)
    root._clinic_configured = True
