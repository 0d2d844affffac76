from clinic.migrations import run_migrations
from records.db import metadata

run_migrations(metadata)
