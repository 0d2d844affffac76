"""The mail log over HTTP: front desk and nurses see metadata ("did the patient get my email?"), an
admin also the body as rendered; others are refused; filters and paging; an admin's retry of a
failed or skipped message. Every look is in the PHI audit. On PostgreSQL and on SQLite."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from clinic import events
from clinic.auth import issue_token
from clinic.config import load_settings
from clinic.db import rows_of
from notifications import db
from notifications.app import create_app
from notifications.db import messages
from tests.integration.notifications.test_mail_log import CLINIC, TUESDAY_TEN, Post, new_id


class Desk:
    """The notifications app on the test database, and the consumer side filling its mail log."""

    def __init__(self, engine, clock, settings):
        self.post = Post(engine, clock)
        self.settings = settings
        self.client = create_app(settings, mail=CLINIC, db_engine=engine, clock=clock).test_client()

    def call(self, method: str, path: str, role: str, **kwargs):
        token = issue_token(self.settings, f"{role}-1", [role])
        return self.client.open(path, method=method, headers={"Authorization": f"Bearer {token}"}, **kwargs)

    def audit(self) -> list[dict]:
        with self.post.engine.connect() as connection:
            return rows_of(connection, sa.select(db.audit_log).order_by(db.audit_log.c.id))

    def mark(self, message_id: str, **values) -> None:
        with self.post.engine.begin() as connection:
            connection.execute(sa.update(messages.messages).where(messages.messages.c.id == message_id).values(**values))


@pytest.fixture
def desk(notifications_engine, clock, broker):
    settings = load_settings("notifications", env={}).with_changes(
        database_url=notifications_engine.url.render_as_string(hide_password=False), rabbitmq_url=broker.url)
    return Desk(notifications_engine, clock, settings)


def booked_message(desk: Desk, **contact) -> dict:
    patient = desk.post.contact(**contact)
    desk.post.book(patient)
    [row] = desk.post.rows(patient_id=patient)
    return row


def test_an_admin_sees_the_body_as_rendered_and_the_look_is_audited(desk):
    row = booked_message(desk)

    answer = desk.call("GET", f"/messages/{row['id']}", "admin")

    assert answer.status_code == 200, answer.get_data(as_text=True)
    shown = answer.get_json()
    assert (shown["kind"], shown["status"], shown["recipient"]) == ("infusion_booked", "queued", "ida.berg@example.org")
    assert "Ida" in shown["body"]["text"] and "Tuesday" in shown["body"]["text"]
    assert shown["body"]["html"].lstrip().startswith("<") and shown["body"]["has_calendar"] is True
    assert shown["context"]["room_name"] == "Infusion 2"
    [audit] = desk.audit()
    assert (audit["subject"], audit["action"], audit["resource"], audit["resource_id"], audit["patient_id"], audit["outcome"]) == (
        "admin-1", "read", "message", row["id"], row["patient_id"], "allowed")


@pytest.mark.parametrize("role", ["front_desk", "nurse"])
def test_front_desk_and_nurses_see_metadata_only(desk, role):
    row = booked_message(desk)

    answer = desk.call("GET", f"/messages/{row['id']}", role)

    assert answer.status_code == 200
    shown = answer.get_json()
    assert shown["status"] == "queued" and shown["recipient"] == "ida.berg@example.org"
    assert "body" not in shown and "context" not in shown
    assert desk.audit()[-1]["patient_id"] == row["patient_id"]


def test_other_roles_are_refused_and_the_refusal_is_audited(desk):
    row = booked_message(desk)

    for path in ("/messages", f"/messages/{row['id']}"):
        answer = desk.call("GET", path, "neurologist")
        assert answer.status_code == 403 and answer.get_json()["error"]["code"] == "forbidden"
    assert desk.call("POST", f"/messages/{row['id']}/retry", "front_desk").status_code == 403
    assert [entry["outcome"] for entry in desk.audit()] == ["denied", "denied", "denied"]


def test_an_unknown_message_is_a_404(desk):
    answer = desk.call("GET", f"/messages/{new_id()}", "admin")
    assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "not_found"


def test_the_list_filters_by_patient_status_kind_and_time_and_pages(desk):
    ida = booked_message(desk)
    opted_out = booked_message(desk, opted_out=True)
    desk.post.clock.advance(hours=1)
    desk.post.receive(events.VITALS_ALERT_RAISED, {
        "alert_id": new_id(), "session_id": new_id(), "room_id": new_id(), "room_name": "Infusion 2",
        "kind": "monitor_silent", "level": "urgent", "escalation": False, "raised_at": TUESDAY_TEN}, version=2)

    def ids(role="front_desk", **query):
        answer = desk.call("GET", "/messages", role, query_string=query)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return [item["id"] for item in answer.get_json()]

    assert len(ids()) == 4
    assert ids(patient_id=ida["patient_id"]) == [ida["id"]]
    assert ids(status="skipped") == [opted_out["id"]]
    assert len(ids(kind="staff_alert", role="nurse")) == 2
    since = (desk.post.clock() - timedelta(minutes=30)).isoformat()
    assert len(ids(since=since)) == 2
    first_page, second_page = ids(limit=3), ids(limit=3, offset=3)
    assert len(first_page) == 3 and len(second_page) == 1 and not set(first_page) & set(second_page)
    assert all("context" not in item for item in desk.call("GET", "/messages", "admin").get_json())
    bad = desk.call("GET", "/messages", "front_desk", query_string={"status": "lost"})
    assert bad.status_code == 422 and "status" in bad.get_json()["error"]["details"]
    # The search names the patients whose messages it showed.
    assert {entry["patient_id"] for entry in desk.audit() if entry["action"] == "search"} >= {ida["patient_id"],
                                                                                               opted_out["patient_id"]}


def test_an_admin_retries_a_failed_message(desk):
    row = booked_message(desk)
    desk.mark(row["id"], status="failed", reason="template error (MissingContext)", attempts=1)

    answer = desk.call("POST", f"/messages/{row['id']}/retry", "admin")

    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert (answer.get_json()["status"], answer.get_json()["reason"], answer.get_json()["attempts"]) == ("queued", None, 0)
    [stored] = desk.post.rows(id=row["id"])
    assert stored["status"] == "queued" and stored["next_attempt_at"] == desk.post.clock()
    assert desk.audit()[-1]["action"] == "update" and desk.audit()[-1]["patient_id"] == row["patient_id"]


def test_a_retry_goes_to_the_address_the_patient_has_given_since(desk):
    row = booked_message(desk, email=None)
    assert row["status"] == "skipped"

    refused = desk.call("POST", f"/messages/{row['id']}/retry", "admin")
    assert refused.status_code == 409 and refused.get_json()["error"]["details"]["reason"] == messages.NO_EMAIL

    desk.post.contact(row["patient_id"], email="new.address@example.org", version=2)
    answer = desk.call("POST", f"/messages/{row['id']}/retry", "admin")
    assert answer.status_code == 200
    assert (answer.get_json()["status"], answer.get_json()["recipient"]) == ("queued", "new.address@example.org")
    assert answer.get_json()["message_id"]


def test_a_queued_or_sent_message_is_not_retried(desk):
    row = booked_message(desk)
    answer = desk.call("POST", f"/messages/{row['id']}/retry", "admin")
    assert answer.status_code == 409 and answer.get_json()["error"]["details"]["status"] == "queued"
