"""Sessions' web entry point: `gunicorn 'sessions.app:create_app()'`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from clinic.config import Settings, load_settings
from clinic.db import utcnow
from clinic.web import create_service_app
from sessions import SERVICE, alerts_api, board_api, care_api, db, devices_api, sessions_api, vitals_api
from sessions.config import load_rules
from sessions.domain.rules import SessionRules


def create_app(settings: Settings | None = None, rules: SessionRules | None = None,
               clock: Callable[[], datetime] = utcnow, **options):
    """The app; `rules` default to the environment's, `clock` (the current UTC time) is replaceable for tests."""
    blueprints = [sessions_api.blp, care_api.blp, vitals_api.blp, alerts_api.blp, board_api.blp, devices_api.blp]
    app = create_service_app(settings or load_settings(SERVICE), blueprints, title="Sessions", metadata=db.metadata, clock=clock,
                             description="Live infusion sessions, bedside monitors, vital signs, alerts, discharge.", **options)
    app.extensions["sessions.rules"] = rules or load_rules()
    return app
