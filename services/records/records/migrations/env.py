from clinic.db import run_migrations
from records.db import metadata

run_migrations(metadata)
