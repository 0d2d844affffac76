"""Scheduling's web entry point: `gunicorn 'scheduling.app:create_app()'`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from clinic.config import Settings, load_settings
from clinic.db import utcnow
from clinic.web import create_service_app
from scheduling import SERVICE, api, board_api, db, rooms_api
from scheduling.config import load_rules
from scheduling.domain import SchedulingRules


def create_app(settings: Settings | None = None, rules: SchedulingRules | None = None,
               clock: Callable[[], datetime] = utcnow, **options):
    """The app; `rules` default to the environment's, `clock` (the current UTC time) is replaceable for tests."""
    settings = settings or load_settings(SERVICE)
    rules = rules or load_rules(settings)
    app = create_service_app(settings, [rooms_api.rooms, rooms_api.hours, rooms_api.closures_blp, api.blp, api.availability,
                                        board_api.blp],
                             title="Scheduling", metadata=db.metadata, clock=clock,
                             description="Infusion and exam rooms, office hours, appointments.", **options)
    app.extensions["scheduling.rules"] = rules
    app.extensions["scheduling.clock"] = clock
    return app
