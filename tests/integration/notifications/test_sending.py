"""The sender against a real SMTP server on loopback: every queued message sent once; an outage
waited out with growing delays; a refused recipient or a template error failed with the reason,
never blocking the others; a sender dying between sending and marking resends with the same
Message-ID once its lease has run out. On PostgreSQL and on SQLite."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest

from clinic.localservers import free_port
from notifications import db
from notifications.db import messages
from notifications.services import sending
from tests.integration.notifications.conftest import BODY_WORDS


def test_a_queued_message_is_sent_once_and_reads_back_as_written(desk, smtp_sink):
    patient = desk.patient("ida.berg@example.org")
    desk.queue(patient, calendar=True)

    outcome = desk.send()

    [row] = desk.rows()
    assert outcome.sent == [row["id"]]
    assert row["status"] == messages.SENT and row["sent_at"] == desk.clock() and row["claimed_until"] is None
    [(mail_from, rcpt_tos, _)] = smtp_sink.envelopes
    assert mail_from == "desk@clinic.example" and rcpt_tos == ["ida.berg@example.org"]
    [received] = smtp_sink.messages()
    assert received["To"].addresses[0].display_name == "Ida Berg"
    assert received["To"].addresses[0].addr_spec == "ida.berg@example.org"
    assert received["From"].addresses[0].display_name == "Riverside Infusion"
    assert received["Subject"] == "infusion_booked at Room 3"
    assert received["Message-ID"] == row["message_id"]
    assert received.get_body(("plain",)).get_content().startswith("Dear Ida Berg, your infusion_booked at Room 3.")
    assert received.get_body(("html",)).get_content().startswith("<p>Dear Ida Berg")
    [attachment] = list(received.iter_attachments())
    assert attachment.get_content_type() == "text/calendar"
    assert attachment.get_param("method") == "REQUEST"
    assert b"METHOD:REQUEST" in attachment.get_payload(decode=True)

    assert desk.send().sent == []
    assert len(smtp_sink.envelopes) == 1


def test_two_senders_at_once_send_each_message_once(desk, smtp_sink):
    patients = [desk.patient(f"patient{n}@example.org") for n in range(30)]
    for patient in patients:
        desk.queue(patient)
    start = threading.Barrier(4)
    errors = []

    def sender():
        try:
            start.wait()
            while desk.send(batch=3).sent:
                pass
        except Exception as exc:  # noqa: BLE001 - shown by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    ids = [message["Message-ID"] for message in smtp_sink.messages()]
    assert len(ids) == 30 and len(set(ids)) == 30
    assert {row["status"] for row in desk.rows()} == {messages.SENT}


def test_an_smtp_outage_keeps_messages_queued_and_each_goes_once_when_the_server_is_back(desk, smtp_sink):
    for n in range(3):
        desk.queue(desk.patient(f"waiting{n}@example.org"))
    smtp_sink.stop()

    outcome = desk.send()
    assert len(outcome.retrying) == 3 and outcome.sent == []
    rows = desk.rows()
    assert {row["status"] for row in rows} == {messages.QUEUED}
    assert {row["attempts"] for row in rows} == {1}
    assert {row["next_attempt_at"] for row in rows} == {desk.clock() + timedelta(seconds=5)}
    assert all(row["last_error"] == "ConnectionRefusedError" for row in rows)

    # Not due yet: nothing is tried.
    desk.clock.advance(seconds=4)
    assert desk.send().retrying == []
    desk.clock.advance(seconds=1)
    desk.send()
    assert {row["attempts"] for row in desk.rows()} == {2}
    assert {row["next_attempt_at"] for row in desk.rows()} == {desk.clock() + timedelta(seconds=30)}
    desk.clock.advance(seconds=30)
    desk.send()
    assert {row["next_attempt_at"] for row in desk.rows()} == {desk.clock() + timedelta(seconds=120)}

    smtp_sink.start()
    desk.clock.advance(seconds=120)
    assert len(desk.send().sent) == 3
    desk.clock.advance(hours=1)
    assert desk.send().sent == []
    assert sorted(rcpt for _, [rcpt], _ in smtp_sink.envelopes) == [f"waiting{n}@example.org" for n in range(3)]
    assert {row["status"] for row in desk.rows()} == {messages.SENT}


def test_a_refused_recipient_fails_with_the_reason_and_the_others_are_sent(desk, smtp_sink):
    first = desk.queue(desk.patient("first@example.org"))
    refused = desk.queue(desk.patient("refused.mailbox@example.org"))
    last = desk.queue(desk.patient("last@example.org"))

    outcome = desk.send()

    assert len(outcome.sent) == 2 and len(outcome.failed) == 1
    by_event = {row["event_id"]: row for row in desk.rows()}
    assert by_event[first]["status"] == by_event[last]["status"] == messages.SENT
    failed = by_event[refused]
    assert failed["status"] == messages.FAILED
    assert failed["reason"] == "SMTPRecipientsRefused (SMTP 550)"
    assert "@" not in failed["last_error"] and BODY_WORDS not in failed["last_error"]
    assert sorted(rcpt for _, [rcpt], _ in smtp_sink.envelopes) == ["first@example.org", "last@example.org"]
    desk.clock.advance(hours=1)
    assert desk.send().failed == []


def test_a_template_error_fails_that_message_only(desk, smtp_sink):
    broken = str(uuid.uuid4())
    patient = desk.patient("ida@example.org")
    with desk.uow() as uow:
        messages.queue_for_patient(uow, broken, "reminder", patient, {"no room": "given"})
    desk.queue(desk.patient("other@example.org"))

    outcome = desk.send()

    assert len(outcome.sent) == 1 and len(outcome.failed) == 1
    [failed] = desk.rows(event_id=broken)
    assert failed["status"] == messages.FAILED and failed["reason"] == "template error (KeyError)"
    assert [rcpt for _, [rcpt], _ in smtp_sink.envelopes] == ["other@example.org"]


def test_a_sender_killed_between_sending_and_marking_sends_again_after_its_lease_with_the_same_message_id(
        desk, smtp_sink, monkeypatch):
    desk.queue(desk.patient("ida@example.org"))

    class Killed(BaseException):
        """The process ending between the SMTP server's answer and the mark."""

    def killed(*_args):
        raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(messages, "mark_sent", killed)
        with pytest.raises(Killed):
            desk.send()
    [row] = desk.rows()
    assert row["status"] == messages.QUEUED and row["claimed_until"] == desk.clock() + sending.LEASE
    assert len(smtp_sink.envelopes) == 1

    # Another sender leaves it alone while the lease runs...
    desk.clock.advance(seconds=sending.LEASE.total_seconds() - 1)
    assert desk.send().sent == []
    # ...and sends it once the lease has run out, recognisably the same message.
    desk.clock.advance(seconds=1)
    assert desk.send().sent == [row["id"]]
    first, second = smtp_sink.messages()
    assert first["Message-ID"] == second["Message-ID"] == row["message_id"]
    assert desk.rows()[0]["status"] == messages.SENT


def test_a_name_with_line_breaks_from_the_bus_cannot_add_a_header(desk, smtp_sink):
    patient = desk.patient("ida@example.org", given_name="Ida\r\nBcc: victim@example.org")
    desk.queue(patient)

    desk.send()

    [(_, rcpt_tos, content)] = smtp_sink.envelopes
    assert rcpt_tos == ["ida@example.org"]
    [received] = smtp_sink.messages()
    assert received["Bcc"] is None
    headers = content.split(b"\r\n\r\n")[0]
    assert b"\r\nBcc:" not in headers and received["To"].addresses[0].display_name == "Ida Bcc: victim@example.org Berg"


def test_staff_messages_go_to_every_on_call_address(desk, smtp_sink):
    with desk.uow() as uow:
        queued = messages.queue_for_staff(uow, str(uuid.uuid4()), "staff_alert",
                                          ["oncall1@clinic.example", "oncall2@clinic.example"], {"room": "Room 1"})
    assert queued == 2
    assert len(desk.send().sent) == 2
    assert sorted(rcpt for _, [rcpt], _ in smtp_sink.envelopes) == ["oncall1@clinic.example", "oncall2@clinic.example"]
    assert all(message.get_body(("plain",)).get_content().startswith("Dear colleague") for message in smtp_sink.messages())


def test_the_clinics_own_templates_go_out_with_their_calendar_file(desk, smtp_sink):
    """The sender with the real composer: the booking's email parsed back, its .ics read with icalendar."""
    import icalendar

    patient = desk.patient("ida@example.org")
    appointment = str(uuid.uuid4())
    context = {"appointment_id": appointment, "kind": "infusion", "appointment_version": 1,
               "starts_at": "2030-01-08T14:00:00+00:00", "ends_at": "2030-01-08T16:30:00+00:00",
               "room_name": "Room 3", "occurred_at": "2030-01-07T14:00:00+00:00"}
    with desk.uow() as uow:
        messages.queue_for_patient(uow, str(uuid.uuid4()), "infusion_booked", patient, context, appointment)

    outcome = sending.send_due(desk.uow(), desk.mail_settings)

    assert len(outcome.sent) == 1, outcome
    [received] = smtp_sink.messages()
    assert "Room 3" in received.get_body(("plain",)).get_content()
    assert received.get_body(("html",)).get_content_type() == "text/html"
    [attachment] = list(received.iter_attachments())
    assert attachment.get_content_type() == "text/calendar" and attachment.get_param("method") == "REQUEST"
    calendar = icalendar.Calendar.from_ical(attachment.get_payload(decode=True))
    [event] = calendar.walk("VEVENT")
    # 14:00 UTC is 09:00 in New York, the clinic's default time zone.
    assert event.decoded("dtstart").hour == 9 and str(event["uid"]).startswith(appointment)


def test_a_refused_login_keeps_every_message_queued_for_the_next_attempt(desk, smtp_sink):
    """A wrong password (535) or a server refusing mail at its greeting is not the messages' fault:
    they wait and go once the settings or the server are right, none is failed for good."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    def wrong_password(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=False, handled=False)

    refusing = Controller(smtp_sink.collector, hostname="127.0.0.1", port=free_port(), authenticator=wrong_password,
                          auth_require_tls=False, auth_exclude_mechanism=["LOGIN"])
    refusing.start()
    try:
        for n in range(2):
            desk.queue(desk.patient(f"patient{n}@example.org"))
        desk.mail_settings = replace(desk.mail_settings, smtp_port=refusing.port, smtp_username="clinic",
                                     smtp_password="wrong")
        outcome = desk.send()
    finally:
        refusing.stop()

    assert outcome.failed == [] and len(outcome.retrying) == 2
    assert {(row["status"], row["attempts"], row["last_error"]) for row in desk.rows()} == {
        (messages.QUEUED, 1, "SMTPAuthenticationError (SMTP 535)")}
    desk.mail_settings = replace(desk.mail_settings, smtp_port=smtp_sink.port, smtp_username="")
    desk.clock.advance(seconds=5)
    assert len(desk.send().sent) == 2
    assert sorted(rcpt for _, [rcpt], _ in smtp_sink.envelopes) == ["patient0@example.org", "patient1@example.org"]


def test_an_opt_out_that_comes_after_the_message_was_queued_stops_it(desk, smtp_sink):
    """Queued while the server was down, say; the patient then opts out, or removes their address: it is not sent."""
    opting_out, removing, staying = (desk.patient(f"{name}@example.org") for name in ("opting", "removing", "staying"))
    for patient in (opting_out, removing, staying):
        desk.queue(patient)
    with desk.uow() as uow:
        for patient, change in ((opting_out, {"email_opt_out": True}), (removing, {"email": None})):
            db.keep_contact(uow.connection, {**db.get_contact(uow.connection, patient), **change, "version": 2})

    outcome = desk.send()

    assert len(outcome.sent) == 1 and len(outcome.skipped) == 2
    assert [rcpt for _, [rcpt], _ in smtp_sink.envelopes] == ["staying@example.org"]
    assert desk.rows(patient_id=opting_out)[0]["status"] == messages.SKIPPED
    assert desk.rows(patient_id=opting_out)[0]["reason"] == messages.OPTED_OUT
    assert (desk.rows(patient_id=removing)[0]["status"], desk.rows(patient_id=removing)[0]["reason"]) == (
        messages.SKIPPED, messages.NO_EMAIL)
