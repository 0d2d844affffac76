"""Every service's web app on a fresh SQLite file, for tests and tools that walk all of them.

The edge tests and the OpenAPI fuzzer (scripts/fuzz_openapi.py) go through every operation of every
service; they build the apps here, so a new service is covered by adding its name to clinic.config.SERVICES.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from flask import Flask

from clinic.auth import STAFF_ROLES, issue_token
from clinic.config import SERVICES, load_settings
from clinic.db import create_engine
from clinic.migrations import migrate

# SERVICES is clinic.config's, named here for the tools that walk every service.
__all__ = ["SERVICES", "sqlite_service_app", "staff_token"]


def sqlite_service_app(service: str, directory: Path, **setting_changes) -> Flask:
    """`service`'s app (its own create_app) on a migrated SQLite database in `directory`.

    The broker is never reached: nothing here runs a relay or a consumer."""
    url = f"sqlite:///{Path(directory) / f'{service}.db'}"
    engine = create_engine(url)
    try:
        migrate(engine, importlib.import_module(f"{service}.db").MIGRATIONS)
    finally:
        engine.dispose()
    settings = load_settings(service, env={}).with_changes(database_url=url, **setting_changes)
    return importlib.import_module(f"{service}.app").create_app(settings)


def staff_token(app: Flask) -> str:
    """A bearer token for `app` with every staff role, so no operation is refused for want of one."""
    return issue_token(app.config["CLINIC_SETTINGS"], "tester", STAFF_ROLES)
