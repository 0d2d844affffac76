"""The reminder job with a moved clock: from the reminder hour (clinic-local) the day before, one
reminder per booked appointment, however often the job runs (a restart, two workers); a rescheduled
appointment gets a new one for its new day, a cancelled one none. On PostgreSQL and on SQLite."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from clinic.worker import Job
from notifications.db import messages
from notifications.domain import ReminderRules, reminder_event_id
from notifications.services.reminders import queue_reminders
from tests.integration.notifications.test_mail_log import NY, TUESDAY_TEN, Post, new_id, utc_text

MONDAY = TUESDAY_TEN.date() - timedelta(days=1)
RULES = ReminderRules(timezone=NY, hour=17)


def at(day, hour: int, minute: int = 0) -> datetime:
    """A clinic-local time on a day."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=NY)


class Reminders:
    """The job as the worker runs it: a Job, each run in a unit of work of its own at the test's clock."""

    def __init__(self, post: Post):
        self.post = post
        self.job = Job("reminders", timedelta(minutes=1), lambda uow: queue_reminders(uow, RULES))

    def run_at(self, moment: datetime) -> int:
        self.post.clock.moment = moment
        return self.job.run(self.post.uow())

    def sent(self) -> list[dict]:
        return self.post.rows(kind="reminder")


@pytest.fixture
def post(notifications_engine, clock):
    return Post(notifications_engine, clock)


@pytest.fixture
def reminders(post):
    return Reminders(post)


def test_a_reminder_is_queued_once_from_the_reminder_hour_the_day_before(post, reminders):
    patient = post.contact()
    booked = post.book(patient)

    assert reminders.run_at(at(MONDAY, 16, 59)) == 0
    assert reminders.sent() == []
    assert reminders.run_at(at(MONDAY, 17, 0)) == 1
    # The worker restarts, a second worker runs the job: nothing new.
    assert reminders.run_at(at(MONDAY, 17, 1)) == 0
    assert reminders.run_at(at(MONDAY, 23, 59)) == 0

    [reminder] = reminders.sent()
    assert (reminder["status"], reminder["recipient"], reminder["appointment_id"]) == (
        "queued", "ida.berg@example.org", booked["appointment_id"])
    assert reminder["event_id"] == reminder_event_id(booked["appointment_id"], 1)
    assert reminder["context"]["room_name"] == "Infusion 2" and reminder["context"]["kind"] == "infusion"
    assert "Tuesday" in post.renders(reminder)
    # On the day itself it is not "tomorrow" any more.
    assert reminders.run_at(at(MONDAY + timedelta(days=1), 18)) == 0
    assert len(reminders.sent()) == 1


def test_tomorrow_is_the_clinics_tomorrow(post, reminders):
    """An evening appointment on Tuesday in New York is Wednesday in UTC: it is still Tuesday's."""
    patient = post.contact()
    evening = post.book(patient, starts_at=at(MONDAY + timedelta(days=1), 19, 30), minutes=120)
    post.book(patient, starts_at=at(MONDAY + timedelta(days=2), 0, 30), minutes=120)  # Wednesday, just after midnight

    assert reminders.run_at(at(MONDAY, 17)) == 1
    assert [row["appointment_id"] for row in reminders.sent()] == [evening["appointment_id"]]


def test_a_rescheduled_appointment_gets_a_new_reminder_for_its_new_day(post, reminders):
    patient = post.contact()
    booked = post.book(patient)
    assert reminders.run_at(at(MONDAY, 17)) == 1

    thursday = TUESDAY_TEN + timedelta(days=2)
    post.reschedule(booked, thursday, version=2)
    assert reminders.run_at(at(MONDAY, 18)) == 0  # Tuesday's appointment has moved away
    assert reminders.run_at(at(MONDAY + timedelta(days=2), 17)) == 1
    assert reminders.run_at(at(MONDAY + timedelta(days=2), 17, 30)) == 0

    first, second = reminders.sent()
    assert first["event_id"] == reminder_event_id(booked["appointment_id"], 1)
    assert second["event_id"] == reminder_event_id(booked["appointment_id"], 2)
    assert second["context"]["starts_at"] == utc_text(thursday)


def test_a_cancelled_appointment_gets_no_reminder(post, reminders):
    patient = post.contact()
    booked = post.book(patient)
    post.cancel(booked, version=2)

    assert reminders.run_at(at(MONDAY, 17)) == 0
    assert reminders.sent() == []


def test_a_reminder_for_a_patient_without_a_contact_waits_for_it(post, reminders):
    patient = new_id()
    post.book(patient)

    assert reminders.run_at(at(MONDAY, 17)) == 1
    assert reminders.run_at(at(MONDAY, 17, 5)) == 0
    [reminder] = reminders.sent()
    assert reminder["status"] == "waiting_for_contact"

    post.contact(patient, email="ida@example.org")
    assert reminders.run_at(at(MONDAY, 17, 10)) == 0
    [reminder] = reminders.sent()
    assert (reminder["status"], reminder["recipient"]) == ("queued", "ida@example.org")


def test_a_reminder_not_sent_yet_is_skipped_when_the_appointment_is_cancelled_or_moved(post, reminders):
    """Queued at the reminder hour while the SMTP server was down, say: the patient must not be reminded
    of an appointment that is off, or of its old time (the moved one gets its own reminder)."""
    patient = post.contact()
    cancelled = post.book(patient)
    moved = post.book(patient, starts_at=TUESDAY_TEN + timedelta(hours=3))
    assert reminders.run_at(at(MONDAY, 17)) == 2

    post.cancel(cancelled, version=2)
    later_that_day = moved["starts_at"] + timedelta(hours=2)
    post.reschedule(moved, later_that_day, version=2)
    assert reminders.run_at(at(MONDAY, 17, 30)) == 1

    by_event = {row["event_id"]: row for row in reminders.sent()}
    for booked in (cancelled, moved):
        old = by_event[reminder_event_id(booked["appointment_id"], 1)]
        assert (old["status"], old["reason"]) == ("skipped", messages.APPOINTMENT_CHANGED)
    new = by_event[reminder_event_id(moved["appointment_id"], 2)]
    assert new["status"] == "queued" and new["context"]["starts_at"] == utc_text(later_that_day)
