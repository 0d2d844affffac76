from clinic.migrations import run_migrations
from scheduling.db import metadata

run_migrations(metadata)
