"""Records' web entry point: `gunicorn 'records.app:create_app()'`."""

from clinic.config import Settings, load_settings
from clinic.web import create_service_app
from records import SERVICE, api


def create_app(settings: Settings | None = None, **options):
    return create_service_app(settings or load_settings(SERVICE), [api.blp], title="Records",
                              description="Patients, contact details, treatment plans, diary, encounters.", **options)
