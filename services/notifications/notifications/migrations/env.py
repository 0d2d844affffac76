from clinic.migrations import run_migrations
from notifications.db import metadata

run_migrations(metadata)
