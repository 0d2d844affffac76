"""Notifications' web entry point: `gunicorn 'notifications.app:create_app()'`."""

from clinic.config import Settings, load_settings
from clinic.web import create_service_app
from notifications import SERVICE, api, db, messages_api
from notifications.config import MailSettings, load_mail_settings


def create_app(settings: Settings | None = None, mail: MailSettings | None = None, **options):
    """The app; `mail` (the clinic's name, address, telephone, for rendering a message's body) is
    read from the environment unless given."""
    settings = settings or load_settings(SERVICE)
    app = create_service_app(settings, [api.blp, messages_api.blp], title="Notifications", metadata=db.metadata,
                             description="Email to patients and on-call staff, and the mail log.", **options)
    app.extensions["notifications.mail"] = mail or load_mail_settings(settings=settings)
    return app
