"""Notifications' contact copies: kept at the highest version records stamped, never by clock, on
PostgreSQL and on SQLite; built by migrations that match the tables; read only by admins, audited."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timedelta, timezone

from clinic import events
from clinic.auth import issue_token
from clinic.inbox import APPLIED, apply_once
from clinic.migrations import migrate
from clinic.testing.migrations import downgrade, schema_differences
from notifications import db
from notifications.app import create_app
from notifications.config import load_mail_settings
from notifications.handlers import make_handlers


def contact_changed(patient_id: str, email: str, version: int | None, occurred_at: datetime) -> events.Event:
    """The event as it arrives: through the shared schema, both ways, as records' relay and the consumer do."""
    contact = {"patient_id": patient_id, "given_name": "Ida", "family_name": "Berg", "email": email, "phone": None,
               "preferred_contact": "email", "email_opt_out": False}
    if version is not None:
        contact["contact_version"] = version
    sent = events.Event(type=events.PATIENT_CONTACT_CHANGED, producer="records", occurred_at=occurred_at,
                        data=events.serialise_payload(events.PATIENT_CONTACT_CHANGED, contact))
    return events.parse(sent.to_json())


def apply(engine, event: events.Event) -> str:
    return apply_once(engine, db.metadata, "notifications", event, make_handlers(load_mail_settings(env={}))[event.type])


def email_of(engine, patient_id: str) -> str | None:
    with engine.connect() as connection:
        return (db.get_contact(connection, patient_id) or {}).get("email")


def test_the_highest_version_wins_whatever_the_order_and_the_clocks(notifications_engine):
    now = datetime.now(timezone.utc)
    for order in itertools.permutations((1, 2, 3)):
        patient = str(uuid.uuid4())
        for version in order:
            # The clocks that stamped occurred_at are wrong the other way round: the newest change looks oldest.
            event = contact_changed(patient, f"v{version}@example.org", version, now - timedelta(minutes=version))
            assert apply(notifications_engine, event) == APPLIED
        assert email_of(notifications_engine, patient) == "v3@example.org", order


def test_events_from_before_versions_fill_a_copy_but_never_replace_a_versioned_one(notifications_engine):
    """Events queued while records was upgraded carry no version: they are applied as they come, as
    before versions existed, until the first versioned one."""
    now = datetime.now(timezone.utc)
    patient = str(uuid.uuid4())
    apply(notifications_engine, contact_changed(patient, "first-unversioned@example.org", None, now))
    apply(notifications_engine, contact_changed(patient, "unversioned@example.org", None, now))
    assert email_of(notifications_engine, patient) == "unversioned@example.org"
    apply(notifications_engine, contact_changed(patient, "versioned@example.org", 1, now - timedelta(hours=1)))
    apply(notifications_engine, contact_changed(patient, "late-unversioned@example.org", None, now + timedelta(hours=1)))
    assert email_of(notifications_engine, patient) == "versioned@example.org"


def test_the_migrations_build_what_notifications_db_describes_and_go_down_and_up_again(empty_database):
    migrate(empty_database, db.MIGRATIONS)
    assert schema_differences(empty_database, db.metadata) == []
    downgrade(empty_database, db.MIGRATIONS, "0001")
    migrate(empty_database, db.MIGRATIONS)
    assert schema_differences(empty_database, db.metadata) == []


def test_reading_a_contact_copy_is_for_admins_and_is_audited(notifications_engine, broker):
    from clinic.config import load_settings

    settings = load_settings("notifications", env={}).with_changes(
        database_url=str(notifications_engine.url.render_as_string(hide_password=False)), rabbitmq_url=broker.url)
    app = create_app(settings, db_engine=notifications_engine)
    client = app.test_client()
    patient = str(uuid.uuid4())
    apply(notifications_engine, contact_changed(patient, "ida@example.org", 1, datetime.now(timezone.utc)))

    def as_role(role):
        return {"Authorization": f"Bearer {issue_token(settings, 'support-1', [role])}"}

    assert client.get(f"/contacts/{patient}", headers=as_role("nurse")).status_code == 403
    answer = client.get(f"/contacts/{patient}", headers=as_role("admin"))
    assert answer.status_code == 200 and answer.get_json()["email"] == "ida@example.org"
    assert answer.get_json()["version"] == 1
    with notifications_engine.connect() as connection:
        rows = connection.execute(db.audit_log.select().order_by(db.audit_log.c.id)).mappings().all()
    assert [(row["subject"], row["outcome"], row["patient_id"]) for row in rows] == [
        ("support-1", "denied", patient), ("support-1", "allowed", patient)]
