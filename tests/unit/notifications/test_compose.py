"""The emails' words, HTML escaping, times in the clinic's zone, the .ics read back with icalendar, refusals."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import icalendar
import jinja2
import pytest

from notifications import compose as compose_module
from notifications.compose import KINDS, REQUIRED_CONTEXT, CompositionError, MissingContext, compose, spoken_moment

NEW_YORK = ZoneInfo("America/New_York")
APPOINTMENT_ID = "6f1c2a34-0000-4000-8000-000000000001"


@dataclass(frozen=True)
class Clinic:
    clinic_name: str = "Riverside Headache Clinic"
    clinic_address: str = "12 Mill Lane, Springfield"
    clinic_phone: str = "+1 555 0100"
    mail_from: str = "Riverside Headache Clinic <appointments@riverside.example>"
    timezone: ZoneInfo = field(default=NEW_YORK)


CLINIC = Clinic()
ADA = {"patient_id": "p-1", "given_name": "Ada", "family_name": "Lovelace", "email": "ada@example.org"}


def appointment(**changes) -> dict:
    # 14:00 UTC on 8 January 2030 is 9:00 AM in New York (EST, UTC-5).
    context = {
        "appointment_id": APPOINTMENT_ID,
        "appointment_version": 1,
        "kind": "infusion",
        "starts_at": "2030-01-08T14:00:00+00:00",
        "ends_at": "2030-01-08T16:30:00+00:00",
        "room_name": "Infusion 2",
        "previous_starts_at": "2030-01-07T15:00:00+00:00",
        "occurred_at": "2030-01-02T10:00:00+00:00",
    }
    return {**context, **changes}


def alert(**changes) -> dict:
    context = {
        "alert_id": "al-1",
        "session_id": "se-1",
        "room_name": "Infusion 2",
        "alert_kind": "news2",
        "level": "urgent",
        "escalation": False,
        "news2_score": 6,
        "scored": [{"parameter": "heart_rate", "points": 3}, {"parameter": "respiratory_rate", "points": 2},
                   {"parameter": "spo2", "points": 1}],
        "raised_at": "2030-01-08T15:05:00+00:00",
    }
    return {**context, **changes}


def context_for(kind: str) -> dict:
    if kind == "staff_alert":
        return alert()
    if kind == "post_infusion":
        return {"ended_at": "2030-01-08T16:35:00+00:00"}
    return appointment()


def contact_for(kind: str) -> dict | None:
    return None if kind == "staff_alert" else ADA


def event_of(composed) -> tuple[icalendar.Calendar, icalendar.Event]:
    calendar = icalendar.Calendar.from_ical(composed.calendar)
    (event,) = calendar.walk("VEVENT")
    return calendar, event


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_text_and_html_with_the_clinic_details(kind):
    composed = compose(kind, context_for(kind), contact_for(kind), CLINIC)

    assert composed.subject and "\n" not in composed.subject
    for body in (composed.text, composed.html):
        assert "Riverside Headache Clinic" in body
        assert "12 Mill Lane, Springfield" in body
        assert "+1 555 0100" in body
    assert composed.html.lstrip().startswith("<!DOCTYPE html>")
    assert "<" not in composed.text
    if kind != "staff_alert":
        assert "Dear Ada," in composed.text
        assert "Dear Ada," in composed.html


def test_infusion_booked_says_when_how_long_where_and_how_to_prepare():
    composed = compose("infusion_booked", appointment(), ADA, CLINIC)

    assert composed.subject == "Your infusion is booked for Tuesday 8 January 2030 at 9:00 AM"
    for body in (composed.text, composed.html):
        assert "Tuesday 8 January 2030 at 9:00 AM" in body
        assert "2 hours 30 minutes" in body
        assert "at least two hours" in body
        assert "private room with a reclining chair" in body
        assert "adult to come with you and to take you home afterwards" in body
        assert "laptop (there is Wi-Fi)" in body
        assert "One adult visitor may stay with you at a time" in body
        assert "Infusion 2" in body


def test_rescheduled_gives_the_new_and_the_old_time():
    composed = compose("rescheduled", appointment(appointment_version=2), ADA, CLINIC)

    assert composed.subject == "Your infusion has moved to Tuesday 8 January 2030 at 9:00 AM"
    assert "It was booked for: Monday 7 January 2030 at 10:00 AM" in composed.text


def test_a_follow_up_is_a_return_office_visit_without_infusion_preparation():
    composed = compose("follow_up_booked", appointment(kind="follow_up", ends_at="2030-01-08T14:30:00+00:00"), ADA, CLINIC)

    assert composed.subject == "Your return office visit is booked for Tuesday 8 January 2030 at 9:00 AM"
    assert "30 minutes" in composed.text
    assert "reclining chair" not in composed.text
    reminder = compose("reminder", appointment(kind="follow_up"), ADA, CLINIC)
    assert reminder.subject == "Reminder: your return office visit on Tuesday 8 January 2030 at 9:00 AM"
    assert "How to prepare" not in reminder.text


def test_no_show_asks_to_call_to_rebook():
    composed = compose("no_show", {"kind": "infusion", "starts_at": "2030-01-08T14:00:00Z"}, ADA, CLINIC)

    assert "We missed you at your infusion on Tuesday 8 January 2030 at 9:00 AM" in composed.text
    assert "Please call us on +1 555 0100 to book a new time." in composed.text
    assert composed.calendar is None and composed.calendar_method is None


def test_post_infusion_says_rest_call_any_time_and_a_return_visit_follows():
    composed = compose("post_infusion", {"ended_at": "2030-01-08T16:35:00Z"}, ADA, CLINIC)

    for body in (composed.text, composed.html):
        assert "rest for the remainder of the day" in body
        assert "keep the headache from coming back" in body
        assert "call us at any time" in body
        assert "+1 555 0100" in body
        assert "return office visit follows" in body
    assert "11:35 AM" in composed.text


@pytest.mark.parametrize(("utc", "spoken"), [
    ("2030-01-08T17:30:00+00:00", "Tuesday 8 January 2030 at 12:30 PM"),
    ("2030-01-09T05:05:00+00:00", "Wednesday 9 January 2030 at 12:05 AM"),
    # Summer time: New York is UTC-4 in July.
    ("2030-07-02T13:00:00+00:00", "Tuesday 2 July 2030 at 9:00 AM"),
])
def test_times_are_spoken_in_the_clinics_zone(utc, spoken):
    assert spoken_moment(datetime.fromisoformat(utc).astimezone(NEW_YORK)) == spoken
    assert spoken in compose("no_show", {"kind": "infusion", "starts_at": utc}, ADA, CLINIC).text


def test_values_from_the_bus_are_escaped_in_html_and_kept_in_text():
    room = '<b>Room & "1"</b>'
    composed = compose("infusion_booked", appointment(room_name=room), {**ADA, "given_name": "<script>x</script>"}, CLINIC)

    assert "&lt;b&gt;Room &amp; &#34;1&#34;&lt;/b&gt;" in composed.html
    assert "&lt;script&gt;x&lt;/script&gt;" in composed.html
    assert "<b>Room" not in composed.html and "<script>" not in composed.html
    assert room in composed.text


def test_a_line_break_from_the_bus_never_reaches_the_subject():
    composed = compose("staff_alert", alert(room_name="Infusion 2\r\nBcc: someone@example.org"), None, CLINIC)

    assert "\n" not in composed.subject and "\r" not in composed.subject


def test_the_booking_calendar_is_in_local_time_with_its_zone():
    composed = compose("infusion_booked", appointment(), ADA, CLINIC)
    calendar, event = event_of(composed)

    assert composed.calendar_method == "REQUEST"
    assert str(calendar["METHOD"]) == "REQUEST"
    assert event.decoded("DTSTART") == datetime(2030, 1, 8, 9, 0, tzinfo=NEW_YORK)
    assert event["DTSTART"].params["TZID"] == "America/New_York"
    assert event.decoded("DTEND") == datetime(2030, 1, 8, 11, 30, tzinfo=NEW_YORK)
    assert [zone.tz_name for zone in calendar.timezones] == ["America/New_York"]
    assert str(event["UID"]) == f"{APPOINTMENT_ID}@riverside.example"
    assert event.decoded("SEQUENCE") == 1
    assert str(event["STATUS"]) == "CONFIRMED"
    assert str(event["LOCATION"]) == "Infusion 2, Riverside Headache Clinic, 12 Mill Lane, Springfield"
    assert event.decoded("DTSTAMP") == datetime.fromisoformat("2030-01-02T10:00:00+00:00")
    assert str(event["ORGANIZER"]) == "mailto:appointments@riverside.example"


def test_a_reschedule_keeps_the_uid_and_raises_the_sequence_and_a_cancel_removes_it():
    _, booked = event_of(compose("infusion_booked", appointment(appointment_version=1), ADA, CLINIC))
    moved = compose("rescheduled", appointment(appointment_version=2, starts_at="2030-01-10T19:00:00Z",
                                               ends_at="2030-01-10T21:00:00Z"), ADA, CLINIC)
    _, rescheduled = event_of(moved)
    cancelled_mail = compose("cancelled", {"appointment_id": APPOINTMENT_ID, "appointment_version": 3, "kind": "infusion",
                                           "starts_at": "2030-01-10T19:00:00Z"}, ADA, CLINIC)
    calendar, cancelled = event_of(cancelled_mail)

    assert booked["UID"] == rescheduled["UID"] == cancelled["UID"]
    assert booked.decoded("SEQUENCE") < rescheduled.decoded("SEQUENCE") < cancelled.decoded("SEQUENCE")
    assert rescheduled.decoded("SEQUENCE") == 2
    assert moved.calendar_method == "REQUEST"
    assert rescheduled.decoded("DTSTART") == datetime(2030, 1, 10, 14, 0, tzinfo=NEW_YORK)
    assert cancelled_mail.calendar_method == "CANCEL"
    assert str(calendar["METHOD"]) == "CANCEL"
    assert str(cancelled["STATUS"]) == "CANCELLED"
    assert cancelled.decoded("DTSTART") == datetime(2030, 1, 10, 14, 0, tzinfo=NEW_YORK)


def test_an_appointment_from_before_versions_has_sequence_zero():
    _, event = event_of(compose("infusion_booked", appointment(appointment_version=None), ADA, CLINIC))

    assert event.decoded("SEQUENCE") == 0


@pytest.mark.parametrize("kind", ["reminder", "no_show", "post_infusion", "staff_alert"])
def test_only_bookings_changes_and_cancellations_carry_a_calendar(kind):
    composed = compose(kind, context_for(kind), contact_for(kind), CLINIC)

    assert composed.calendar is None and composed.calendar_method is None


@pytest.mark.parametrize(("changes", "subject"), [
    ({}, "Urgent alert in Infusion 2: NEWS2 score 6"),
    ({"level": "emergency", "news2_score": 8}, "Emergency alert in Infusion 2: NEWS2 score 8"),
    ({"escalation": True}, "Escalated: Urgent alert in Infusion 2: NEWS2 score 6"),
    ({"alert_kind": "monitor_silent", "news2_score": None, "scored": []}, "Urgent alert in Infusion 2: monitor silent"),
])
def test_the_staff_alert_subject_says_its_level_and_escalation(changes, subject):
    assert compose("staff_alert", alert(**changes), None, CLINIC).subject == subject


def test_the_staff_alert_names_the_scored_parameters_and_never_the_patient():
    # Even a contact handed in by mistake does not reach a staff alert.
    composed = compose("staff_alert", alert(escalation=True), ADA, CLINIC)

    for body in (composed.text, composed.html):
        assert "Ada" not in body and "Lovelace" not in body and "ada@example.org" not in body
        assert "NEWS2 score" in body and "6" in body
        assert "Heart rate: 3 points" in body
        assert "Respiratory rate: 2 points" in body
        assert "SpO2: 1 point" in body
        assert "se-1" in body and "al-1" in body
        assert "not acknowledged" in body or "nobody acknowledged" in body
        assert "Tuesday 8 January 2030 at 10:05 AM" in body


def test_a_silent_monitor_alert_says_so_without_a_score():
    composed = compose("staff_alert", alert(alert_kind="monitor_silent", news2_score=None, scored=[]), None, CLINIC)

    assert "monitor has stopped sending vital signs" in composed.text
    assert "NEWS2 score" not in composed.text


@pytest.mark.parametrize(("kind", "key"), [(kind, key) for kind in KINDS for key in REQUIRED_CONTEXT[kind]])
def test_a_missing_context_value_is_named(kind, key):
    context = context_for(kind)
    del context[key]

    with pytest.raises(MissingContext, match=f"'{key}'") as refused:
        compose(kind, context, contact_for(kind), CLINIC)
    assert refused.value.key == key and refused.value.kind == kind


def test_a_template_using_a_value_it_was_not_given_fails_instead_of_printing_nothing(monkeypatch):
    broken = {"no_show.txt": "{% extends 'layout.txt' %}{% block body %}Room {{ room_number }}{% endblock %}"}
    loader = jinja2.ChoiceLoader([jinja2.DictLoader(broken), compose_module._TEMPLATES.loader])
    monkeypatch.setattr(compose_module, "_TEMPLATES", compose_module._TEMPLATES.overlay(loader=loader))

    with pytest.raises(CompositionError, match="room_number"):
        compose("no_show", appointment(), ADA, CLINIC)


@pytest.mark.parametrize(("kind", "context", "contact", "message"), [
    ("birthday", {}, ADA, "no email of kind 'birthday'"),
    ("no_show", {"kind": "infusion", "starts_at": "2030-01-08T14:00:00Z"}, None, "given_name"),
    ("no_show", {"kind": "infusion", "starts_at": "2030-01-08T14:00:00Z"}, {"email": "a@example.org"}, "given_name"),
    ("no_show", {"kind": "infusion", "starts_at": "2030-01-08T09:00:00"}, ADA, "offset"),
    ("no_show", {"kind": "infusion", "starts_at": "next Tuesday"}, ADA, "ISO 8601"),
    ("no_show", {"kind": "massage", "starts_at": "2030-01-08T14:00:00Z"}, ADA, "unknown appointment kind 'massage'"),
])
def test_what_cannot_be_written_is_refused_with_the_reason(kind, context, contact, message):
    with pytest.raises(CompositionError, match=message):
        compose(kind, context, contact, CLINIC)


def test_an_alert_from_before_points_were_sent_names_its_parameters_without_points():
    composed = compose("staff_alert", alert(scored=[{"parameter": "heart_rate", "points": None}]), None, CLINIC)

    assert "- Heart rate\n" in composed.text
    assert "None" not in composed.text and "None" not in composed.html
