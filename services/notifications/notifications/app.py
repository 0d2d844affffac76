"""Notifications' web entry point: `gunicorn 'notifications.app:create_app()'`."""

from clinic.config import Settings, load_settings
from clinic.web import create_service_app
from notifications import SERVICE, api, db


def create_app(settings: Settings | None = None, **options):
    return create_service_app(settings or load_settings(SERVICE), [api.blp], title="Notifications", metadata=db.metadata,
                              description="Email to patients and on-call staff, and the mail log.", **options)
