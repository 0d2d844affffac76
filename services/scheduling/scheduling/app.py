"""Scheduling's web entry point: `gunicorn 'scheduling.app:create_app()'`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from clinic.config import Settings, load_settings
from clinic.db import utcnow
from clinic.web import create_service_app
from scheduling import SERVICE, appointments_api, availability_api, board_api, closures_api, office_hours_api, rooms_api
from scheduling.config import load_rules
from scheduling.db import metadata
from scheduling.domain import SchedulingRules


def create_app(settings: Settings | None = None, rules: SchedulingRules | None = None,
               clock: Callable[[], datetime] = utcnow, **options):
    """The app; `rules` default to the environment's, `clock` (the current UTC time) is replaceable for tests."""
    settings = settings or load_settings(SERVICE)
    rules = rules or load_rules(settings)
    blueprints = [rooms_api.blp, office_hours_api.blp, closures_api.blp, appointments_api.blp, availability_api.blp, board_api.blp]
    app = create_service_app(settings, blueprints, title="Scheduling", metadata=metadata, clock=clock,
                             description="Infusion and exam rooms, office hours, appointments.", **options)
    app.extensions["scheduling.rules"] = rules
    return app
