"""Records' web entry point: `gunicorn 'records.app:create_app()'`."""

from clinic.config import Settings, load_settings
from clinic.web import create_service_app
from records import SERVICE, audit_api, db, diagnoses_api, diary_api, encounters_api, patients_api, plans_api

BLUEPRINTS = [patients_api.blp, diagnoses_api.blp, plans_api.blp, diary_api.blp, encounters_api.blp, audit_api.blp]


def create_app(settings: Settings | None = None, **options):
    """The records app: its blueprints on the shared web core, over records' tables (outbox and audit log among them)."""
    return create_service_app(settings or load_settings(SERVICE), BLUEPRINTS, title="Records", metadata=db.metadata,
                              description="Patients, contact details, diagnoses, treatment plans, headache diary, "
                                          "encounters and the PHI access audit.", **options)
