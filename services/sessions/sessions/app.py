"""Sessions' web entry point: `gunicorn 'sessions.app:create_app()'`."""

from clinic.config import Settings, load_settings
from clinic.web import create_service_app
from sessions import SERVICE, api, db


def create_app(settings: Settings | None = None, **options):
    return create_service_app(settings or load_settings(SERVICE), [api.blp], title="Sessions", metadata=db.metadata,
                              description="Live infusion sessions, bedside monitors, vital signs, alerts, discharge.", **options)
