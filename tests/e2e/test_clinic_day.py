"""The whole clinic day, end to end, as the staff apps and the bedside monitors drive it: over HTTP only,
against the four services and their workers running as separate processes (tests/e2e/stack.py), on a
real RabbitMQ, real PostgreSQL databases and a real SMTP server.

Time is real: the clinic's time zone is chosen so that now is mid-morning there, the office hours
cover the morning, and the infusion is booked a few minutes ahead. The same journey runs three times:
as it is, with the broker stopped and started again part-way through, and with the records worker
SIGKILLed and started again part-way through. Each ends in exactly the same state (END_OF_DAY): every
email once, one encounter, one follow-up visit.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import requests

from clinic.testing import eventually
from tests.e2e.conftest import took
from tests.e2e.stack import SERVICES, ClinicStack, clinic_stack
from tests.support.staff import StaffClient

ONCALL = "on-call@clinic.example"
PATIENT_EMAIL = "maria.silva@example.org"
KETOROLAC = {"name": "ketorolac", "dose": "30", "unit": "mg", "route": "IV", "purpose": "pain", "max_per_24h": "120"}
ONDANSETRON = {"name": "ondansetron", "dose": "4", "unit": "mg", "route": "IV", "purpose": "nausea_vomiting",
               "max_per_24h": "16"}
CALM = {"heart_rate": 74, "systolic": 124, "diastolic": 78, "respiratory_rate": 14, "spo2": 98, "on_oxygen": False,
        "temperature": "36.8", "consciousness": "alert"}
# The infusion going badly: blood pressure falling (1, then 3 points) while the heart speeds up (1, then 2).
SLIPPING = {**CALM, "systolic": 104, "diastolic": 66, "heart_rate": 102}
FALLEN = {**CALM, "systolic": 88, "diastolic": 54, "heart_rate": 118}
ESCORT = {"name": "Sam Rivera", "relationship": "spouse", "phone": "+1 212 555 0100", "adult_present": True}
INSTRUCTIONS = {"rest_today": True, "call_if_problems": True, "return_visit": True}
WAIT = 30  # seconds for anything that crosses the bus; the broker restart is the slowest

# What every run of the day ends with, whatever went wrong on the way.
END_OF_DAY = {
    "emails": {(PATIENT_EMAIL, "infusion_booked"): 1, (PATIENT_EMAIL, "follow_up_booked"): 1,
               (PATIENT_EMAIL, "post_infusion"): 1, (ONCALL, "staff_alert"): 1},
    "mail_log": {("infusion_booked", "sent"): 1, ("follow_up_booked", "sent"): 1, ("post_infusion", "sent"): 1,
                 ("staff_alert", "sent"): 1},
    "encounters": 1,
    "appointments": {("infusion", "completed"): 1, ("follow_up", "booked"): 1},
    "sessions": {"completed": 1},
    "alerts": {("news2", "urgent", 5, True): 1},
}

# The service settings the journey runs with, over each service's defaults.
CLINIC_ENV = {
    "CLINIC_ENV": "test",
    # Generous limits: the test polls every service from one address, and the monitor streams
    # readings faster than a real one; the limits themselves have tests of their own.
    "CLINIC_RATE_LIMIT_PER_ADDRESS": "100000/minute",
    "CLINIC_RATE_LIMIT_PER_SUBJECT": "100000/minute",
    "CLINIC_RATE_LIMIT_PER_DEVICE": "10000/minute",
    "CLINIC_RELAY_IDLE_SECONDS": "0.05",
    "CLINIC_RECONNECT_MAX_SECONDS": "1",
    "CLINIC_RETRY_DELAYS": "0.5,1",
    "SEND_RETRY_SECONDS": "1",
    "ONCALL_EMAILS": ONCALL,
    # A slow run must not have the worker raise monitor_silent or an escalation of its own: the day
    # would then end with more alerts and emails than the journey made.
    "SESSIONS_MONITOR_SILENT_MINUTES": "60",
    "SESSIONS_ESCALATE_MINUTES": "60",
}


def mid_morning_zone(now: datetime) -> str:
    """A fixed-offset zone where `now` is between 10:00 and 11:00: the infusion, booked a few minutes
    ahead, then fits inside the day's office hours, and the day-before reminders (REMINDER_HOUR, 17)
    are not due."""
    offset = (10 - now.hour + 12) % 24 - 12
    # The Etc zones' signs are POSIX's: Etc/GMT-3 is three hours ahead of UTC.
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Staff(StaffClient):
    """The staff apps and a bedside monitor (a device's token is passed as `who`)."""

    PEOPLE = {"desk": ("desk-rosa", "front_desk"), "nurse": ("nurse-ana", "nurse"), "neurologist": ("dr-lee", "neurologist"),
              "admin": ("admin-kim", "admin")}

    def __init__(self, stack: ClinicStack, zone: str):
        self.stack = stack
        self.zone = zone  # the clinic's time zone (CLINIC_TIMEZONE)
        super().__init__(stack.url, stack.settings["records"], self.PEOPLE,
                         [stack.settings[service].oidc_audience for service in SERVICES], timeout=15)


def email_kind(message) -> str:
    """Which of notifications' emails this is, from its subject (notifications.compose)."""
    # A subject too long for the first line is folded whole onto the next (Python's email package),
    # which leaves a leading space once unfolded; mail programs drop it.
    subject = message["Subject"].strip()
    for start, kind in (("Your infusion is booked", "infusion_booked"), ("Your return office visit is booked", "follow_up_booked"),
                        ("After your infusion", "post_infusion")):
        if subject.startswith(start):
            return kind
    if " alert in " in subject:
        return "staff_alert"
    return f"other: {subject}"


def emails(stack: ClinicStack) -> Counter:
    return Counter((str(message["To"].addresses[0].addr_spec), email_kind(message)) for message in stack.sink.messages())


def arrived(stack: ClinicStack, recipient: str, kind: str):
    """The email, once the SMTP server has it."""
    def found():
        received = stack.sink.messages()
        matching = [m for m in received if m["To"].addresses[0].addr_spec == recipient and email_kind(m) == kind]
        assert matching, f"received so far: {[(str(m['To']), m['Subject']) for m in received]}"
        return matching[0]
    return eventually(found, timeout=WAIT, interval=0.2, message=f"the {kind} email to {recipient}")


def calendar_of(message) -> str:
    [attachment] = [part for part in message.iter_attachments() if part.get_filename() == "appointment.ics"]
    assert attachment.get_content_type() == "text/calendar"
    return attachment.get_content()


def clinic_day(staff: Staff, fault) -> dict:
    """The journey. `fault(step)` is called after each step; it may break something. Returns what the
    clinic holds at the end of the day (compared with END_OF_DAY)."""
    stack = staff.stack

    # The clinic opens: hours over the whole week (this is a test, not a calendar), an infusion room and an exam room.
    week = {day: [{"opens": "06:00", "closes": "20:00"}] for day in
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")}
    staff.ok("admin", "PUT", "scheduling", "/office-hours", json=week)
    infusion_room = staff.ok("admin", "POST", "scheduling", "/rooms", 201, json={"name": "Infusion 1", "kind": "infusion"})
    exam_room = staff.ok("admin", "POST", "scheduling", "/rooms", 201, json={"name": "Exam 1", "kind": "exam"})
    fault("clinic open")

    # The patient is registered, diagnosed, and given a plan that a neurologist puts in force.
    patient = staff.ok("desk", "POST", "records", "/patients", 201, json={
        "given_name": "Maria", "family_name": "Silva", "birth_date": "1975-05-01", "sex": "female", "email": PATIENT_EMAIL})
    patient_id = patient["id"]
    staff.ok("neurologist", "POST", "records", f"/patients/{patient_id}/diagnoses", 201, json={
        "code": "G43.709", "description": "Chronic migraine without aura, not intractable", "onset_date": "2019-03-01"})
    plan = staff.ok("neurologist", "POST", "records", f"/patients/{patient_id}/treatment-plans", 201, json={
        "infusion_minutes": 120, "drugs": [KETOROLAC, ONDANSETRON], "notes": "Run the first hour slowly"})
    staff.ok("neurologist", "POST", "records", f"/treatment-plans/{plan['id']}/activate")
    fault("plan active")

    # Booked a few minutes ahead, once scheduling has its copy of the plan (it sizes the infusion).
    starts_at = (utc_now() + timedelta(minutes=3)).replace(second=0, microsecond=0)
    window = {"patient_id": patient_id, "kind": "infusion", "from": starts_at.isoformat(),
              "to": (starts_at + timedelta(hours=4)).isoformat(), "room_id": infusion_room["id"]}
    eventually(lambda: staff.call("desk", "GET", "scheduling", "/availability", params=window).status_code == 200,
               timeout=WAIT, interval=0.2, message="scheduling's copy of the plan (availability answers 200)")
    infusion = staff.ok("desk", "POST", "scheduling", "/appointments", 201, json={
        "patient_id": patient_id, "kind": "infusion", "starts_at": starts_at.isoformat(), "room_id": infusion_room["id"]})
    assert infusion["plan_id"] == plan["id"]
    assert datetime.fromisoformat(infusion["ends_at"]) - starts_at == timedelta(minutes=120)
    fault("booked")

    confirmation = arrived(stack, PATIENT_EMAIL, "infusion_booked")
    calendar = calendar_of(confirmation)
    assert "BEGIN:VEVENT" in calendar and "METHOD:REQUEST" in calendar, calendar
    local_start = starts_at.astimezone(ZoneInfo(staff.zone))
    assert f"DTSTART;TZID={staff.zone}:{local_start:%Y%m%dT%H%M%S}" in calendar.splitlines(), calendar

    # The patient arrives; sessions opens the session from scheduling's news.
    fault("arriving")
    staff.ok("desk", "POST", "scheduling", f"/appointments/{infusion['id']}/check-in")
    fault("checked in")

    def opened():
        found = staff.ok("nurse", "GET", "sessions", "/sessions", params={"room_id": infusion_room["id"]})
        return [session for session in found if session["appointment_id"] == infusion["id"]]
    [session] = eventually(opened, timeout=WAIT, interval=0.2, message="the session to open in sessions")
    assert (session["status"], session["patient_id"], session["plan_id"]) == ("waiting", patient_id, plan["id"])
    sessions_path = f"/sessions/{session['id']}"
    staff.ok("nurse", "POST", "sessions", f"{sessions_path}/pain-scores", 201, json={"score": 7, "measured_at": utc_now().isoformat()})
    started = staff.ok("nurse", "POST", "sessions", f"{sessions_path}/start")
    assert started["status"] == "started"
    eventually(lambda: staff.ok("desk", "GET", "scheduling", f"/appointments/{infusion['id']}")["status"] == "in_progress",
               timeout=WAIT, interval=0.2, message="scheduling to hold the appointment in progress")
    fault("started")

    # The room's monitor streams: calm, then blood pressure falling while the heart speeds up.
    device = staff.ok("admin", "POST", "sessions", "/devices", 201, json={"room_id": infusion_room["id"], "name": "Monitor 1"})

    def post(values: dict) -> dict:
        answer = staff.ok(device["token"], "POST", "sessions", "/vitals", 201, json={
            "readings": [{"measured_at": utc_now().isoformat(), **values}]})
        assert answer["session_id"] == session["id"]
        [reading] = answer["readings"]
        return reading

    for _ in range(3):
        assert post(CALM)["news2"]["total"] == 0
    assert post(SLIPPING)["alert_level"] is None
    fallen = post(FALLEN)
    assert (fallen["news2"]["total"], fallen["alert_level"]) == (5, "urgent"), fallen
    fault("alert raised")

    alert_email = arrived(stack, ONCALL, "staff_alert")
    assert alert_email["Subject"] == "Urgent alert in Infusion 1: NEWS2 score 5", alert_email["Subject"]
    body = alert_email.get_body(("plain",)).get_content()
    assert "Maria" not in body and "Silva" not in body, "the on-call email names the patient"
    [alert] = staff.ok("nurse", "GET", "sessions", "/alerts", params={"open": "true", "session_id": session["id"]})
    staff.ok("nurse", "POST", "sessions", f"/alerts/{alert['id']}/acknowledge")
    for _ in range(3):
        assert post(CALM)["alert_level"] is None
    fault("alert acknowledged")

    # The plan's drugs are given; a drug the plan does not hold is refused.
    drugs = staff.ok("nurse", "GET", "sessions", sessions_path)["drugs"]
    assert sorted(drug["name"] for drug in drugs) == ["ketorolac", "ondansetron"], drugs
    for drug in drugs:
        staff.ok("nurse", "POST", "sessions", f"{sessions_path}/medications", 201, json={
            "session_drug_id": drug["id"], "dose": drug["dose"], "unit": drug["unit"], "route": drug["route"],
            "given_at": utc_now().isoformat()})
    off_plan = staff.refused("nurse", "POST", "sessions", f"{sessions_path}/medications", 422, "rule_violation", json={
        "session_drug_id": str(uuid.uuid4()), "dose": "25", "unit": "mg", "route": "IV", "given_at": utc_now().isoformat()})
    assert "session_drug_id" in off_plan["details"], off_plan

    # One visitor at a time.
    visitor = staff.ok("nurse", "POST", "sessions", f"{sessions_path}/visitors", 201, json={
        "name": "Sam Rivera", "relationship": "husband", "adult_confirmed": True})
    staff.refused("nurse", "POST", "sessions", f"{sessions_path}/visitors", 409, "conflict", json={
        "name": "Lucia Silva", "relationship": "sister", "adult_confirmed": True})
    staff.ok("nurse", "POST", "sessions", f"{sessions_path}/visitors/{visitor['id']}/leave")
    staff.ok("nurse", "POST", "sessions", f"{sessions_path}/pain-scores", 201, json={"score": 2, "measured_at": utc_now().isoformat()})

    # Home early: the nurse may not discharge before the planned time; the neurologist may, with a reason.
    refusal = staff.refused("nurse", "POST", "sessions", f"{sessions_path}/discharge", 422, "rule_violation", json={
        "escort": ESCORT, "instructions": INSTRUCTIONS})
    assert [unmet["condition"] for unmet in refusal["details"]["unmet"]] == ["planned_minutes"], refusal
    discharged = staff.ok("neurologist", "POST", "sessions", f"{sessions_path}/discharge", json={
        "escort": ESCORT, "instructions": INSTRUCTIONS, "early_discharge_reason": "Headache gone; patient asked to go home"})
    assert discharged["status"] == "completed" and discharged["early_discharge_reason"], discharged
    fault("discharged")

    # Records keeps the encounter; scheduling completes the appointment and books the return visit.
    def encounter():
        found = staff.ok("nurse", "GET", "records", f"/patients/{patient_id}/encounters")
        return found[0] if found else None
    kept = eventually(encounter, timeout=WAIT, interval=0.2, message="the encounter in records")
    assert kept["session_id"] == session["id"] and kept["appointment_id"] == infusion["id"]
    assert sorted((drug["name"], drug["dose"], drug["unit"]) for drug in kept["drugs_given"]) == [
        ("ketorolac", "30", "mg"), ("ondansetron", "4", "mg")], kept["drugs_given"]
    assert (kept["pain_before"], kept["pain_after"], kept["highest_news2"]) == (7, 2, 5), kept
    assert [(a["level"], a["news2_score"]) for a in kept["alerts"]] == [("urgent", 5)], kept["alerts"]

    def completed():
        found = staff.ok("desk", "GET", "scheduling", f"/appointments/{infusion['id']}")
        return found if found["status"] == "completed" and found["follow_up_id"] else None
    infusion = eventually(completed, timeout=WAIT, interval=0.2, message="the appointment completed, with its follow-up")
    follow_up = staff.ok("desk", "GET", "scheduling", f"/appointments/{infusion['follow_up_id']}")
    assert (follow_up["kind"], follow_up["status"], follow_up["room_id"], follow_up["follow_up_of"]) == (
        "follow_up", "booked", exam_room["id"], infusion["id"]), follow_up
    # From the day 14 days after the infusion (SCHEDULING_FOLLOW_UP_AFTER_DAYS), inside office hours.
    visit_day = datetime.fromisoformat(follow_up["starts_at"]).astimezone(ZoneInfo(staff.zone))
    assert visit_day.date() >= local_start.date() + timedelta(days=14) and visit_day.hour >= 6, follow_up

    visit_email = arrived(stack, PATIENT_EMAIL, "follow_up_booked")
    assert "BEGIN:VEVENT" in calendar_of(visit_email)
    arrived(stack, PATIENT_EMAIL, "post_infusion")
    return end_of_day(staff, patient_id, session["id"])


def end_of_day(staff: Staff, patient_id: str, session_id: str) -> dict:
    """What the clinic holds once nothing is left to send: read over HTTP, and the SMTP server's count."""
    def mail_log() -> list[dict]:
        return (staff.ok("admin", "GET", "notifications", "/messages", params={"patient_id": patient_id})
                + staff.ok("admin", "GET", "notifications", "/messages", params={"kind": "staff_alert"}))

    def settled():
        log = mail_log()
        return log if all(message["status"] in ("sent", "failed", "skipped") for message in log) else None
    # An event delivered twice (a redelivery after the kill, a relay's resend after the broker came
    # back) would show below only once applied: nothing may still wait in a queue.
    eventually(staff.stack.bus_is_quiet, timeout=WAIT, interval=0.2, message="every queue delivered")
    log = eventually(settled, timeout=WAIT, interval=0.2, message="the mail log to have nothing left to send")
    return {
        "emails": dict(emails(staff.stack)),
        "mail_log": dict(Counter((message["kind"], message["status"]) for message in log)),
        "encounters": len(staff.ok("nurse", "GET", "records", f"/patients/{patient_id}/encounters")),
        "appointments": dict(Counter((appointment["kind"], appointment["status"]) for appointment in
                                     staff.ok("desk", "GET", "scheduling", "/appointments", params={"patient_id": patient_id}))),
        "sessions": dict(Counter(found["status"] for found in staff.ok("nurse", "GET", "sessions", "/sessions")
                                 if found["patient_id"] == patient_id)),
        "alerts": dict(Counter((alert["kind"], alert["level"], alert["news2_score"], alert["acknowledged_at"] is not None)
                               for alert in staff.ok("nurse", "GET", "sessions", "/alerts", params={"session_id": session_id}))),
    }


# --- the faults ---------------------------------------------------------------------------------------


def no_fault(stack: ClinicStack, broker):
    return lambda step: None


def broker_restart(stack: ClinicStack, broker):
    """RabbitMQ stops as the patient arrives: the front desk checks her in all the same (the web apps
    need only their databases), and the news of it waits in scheduling's outbox until RabbitMQ is back."""
    def fault(step: str) -> None:
        if step == "arriving":
            broker.stop_broker()
        elif step == "checked in":
            try:
                for service in SERVICES:
                    assert requests.get(stack.url(service) + "/healthz", timeout=5).status_code == 200
                    ready = requests.get(stack.url(service) + "/readyz", timeout=15)
                    assert ready.status_code == 503, f"{service} /readyz with the broker down: {ready.status_code} {ready.text}"
            finally:
                broker.start_broker()
    return fault


def records_worker_killed(stack: ClinicStack, broker):
    """The records worker is SIGKILLed the moment the discharge is answered, while the session's
    completion is on its way to it, and started again."""
    def fault(step: str) -> None:
        if step == "discharged":
            stack.kill_worker("records")
            stack.start_worker("records")
            stack.wait_until_consuming("records")
    return fault


@pytest.mark.parametrize("make_fault", [no_fault, broker_restart, records_worker_killed],
                         ids=["as planned", "broker restarted", "records worker killed"])
def test_the_clinic_day_ends_the_same_whatever_fails_on_the_way(make_fault, broker, postgres, settings_for, tmp_path,
                                                               request):
    began = time.monotonic()
    zone = mid_morning_zone(utc_now())
    with clinic_stack(postgres, settings_for, tmp_path, {**CLINIC_ENV, "CLINIC_TIMEZONE": zone}) as stack:
        assert clinic_day(Staff(stack, zone), make_fault(stack, broker)) == END_OF_DAY
    took(request.node.callspec.id, time.monotonic() - began)
