"""Sessions' monitoring tables: devices, readings, alerts. (Filled in with the monitoring.)"""

from sessions.db.tables import metadata  # noqa: F401
