from clinic.migrations import run_migrations
from sessions.db import metadata

run_migrations(metadata)
