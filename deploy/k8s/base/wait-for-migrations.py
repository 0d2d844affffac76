"""Wait until a service's database carries this image's migrations: `python wait-for-migrations.py SERVICE`.

Run as the init container of the web and worker pods. Kubernetes does not order the
migration Job before the Deployments, and a consumer or outbox relay started on an older
schema fails on the tables it expects. This exits 0 once the database is at the newest
revision this image knows (or at a revision newer than it knows, as during a rollback);
until then it keeps the pod in Init and says why every few seconds.
"""

from __future__ import annotations

import importlib
import sys
import time

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from clinic.config import load_settings
from clinic.db import create_engine

POLL_SECONDS = 3


def main(service: str) -> int:
    settings = load_settings(service)
    config = Config()
    config.set_main_option("script_location", str(importlib.import_module(f"{service}.db").MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    heads = set(script.get_heads())
    known = {revision.revision for revision in script.walk_revisions()}
    engine = create_engine(settings.database_url, settings.database_timeout_seconds)
    while True:
        try:
            with engine.connect() as connection:
                current = set(MigrationContext.configure(connection).get_current_heads())
        except Exception as exc:  # the database may still be starting; say which error, never its text
            print(f"{service}: database not reachable yet ({type(exc).__name__})", flush=True)
        else:
            if current == heads:
                print(f"{service}: database at {', '.join(sorted(heads))}", flush=True)
                return 0
            if current - known:
                print(f"{service}: database at {', '.join(sorted(current))}, newer than this image; starting", flush=True)
                return 0
            print(f"{service}: database at {', '.join(sorted(current)) or 'no revision'}, "
                  f"waiting for {', '.join(sorted(heads))} (the {service}-migrate Job)", flush=True)
        time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.splitlines()[0])
    sys.exit(main(sys.argv[1]))
