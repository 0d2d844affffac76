"""Logging set up once per process, with the correlation id on every line.

Log identifiers (event ids, appointment ids), never names, contact details or clinical notes.
"""

import logging

from clinic.config import Settings
from clinic.correlation import current_correlation_id


class _CorrelationFilter(logging.Filter):
    def filter(self, record):
        record.correlation_id = current_correlation_id() or "-"
        return True


def configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    if getattr(root, "_clinic_configured", False):
        return
    handler = logging.StreamHandler()
    handler.addFilter(_CorrelationFilter())
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {settings.service} [%(correlation_id)s] %(name)s: %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.getLogger("pika").setLevel(logging.WARNING)
    root._clinic_configured = True
