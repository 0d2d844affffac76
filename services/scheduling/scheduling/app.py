"""Scheduling' web entry point: `gunicorn 'scheduling.app:create_app()'`."""

from clinic.config import Settings, load_settings
from clinic.web import create_service_app
from scheduling import SERVICE, api


def create_app(settings: Settings | None = None, **options):
    return create_service_app(settings or load_settings(SERVICE), [api.blp], title="Scheduling",
                              description="Infusion and exam rooms, office hours, appointments.", **options)
