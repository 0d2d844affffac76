"""A bedside monitor that posts in a loop is limited on its own: its posts past
CLINIC_RATE_LIMIT_PER_DEVICE are refused (429, nothing stored), while another monitor's go through."""

from __future__ import annotations

from datetime import timedelta

import pytest

from clinic.testing import assert_error
from sessions.db import monitoring
from tests.integration.sessions.support import open_ward, room, started_session
from tests.integration.sessions.support_monitoring import monitor, post_vitals, posted, reading

PER_DEVICE = 3


@pytest.fixture
def ward(sessions_database, settings_for):
    ward = open_ward(sessions_database, settings_for, rate_limit_per_device=f"{PER_DEVICE}/minute")
    yield ward
    ward.engine.dispose()


def monitored_session(ward):
    room_id = room(ward)
    device, token = monitor(ward, room_id)
    return started_session(ward, room_id=room_id), device, token


def test_a_monitor_posting_in_a_loop_is_refused_while_another_monitors_posts_go_through(ward):
    looping_session, _, looping = monitored_session(ward)
    other_session, _, other = monitored_session(ward)
    ward.clock.advance(minutes=5)
    start = ward.clock() - timedelta(minutes=4)

    for second in range(PER_DEVICE):
        posted(ward, looping, reading(start + timedelta(seconds=second)))
    refused = post_vitals(ward, looping, reading(start + timedelta(seconds=30)))
    error = assert_error(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1
    assert error["details"]["per"] == "device" and error["details"]["retry_after_seconds"] >= 1

    # The other monitor has its own allowance: every one of its posts is stored.
    for second in range(PER_DEVICE):
        posted(ward, other, reading(start + timedelta(seconds=second)))
    assert len(ward.rows(monitoring.readings, session_id=other_session["id"])) == PER_DEVICE
    # Nothing of the refused post was stored.
    assert len(ward.rows(monitoring.readings, session_id=looping_session["id"])) == PER_DEVICE


def test_a_made_up_device_token_cannot_spend_a_monitors_allowance(ward):
    _, _, token = monitored_session(ward)
    ward.clock.advance(minutes=5)
    at = ward.clock() - timedelta(minutes=1)
    # A made-up token whose hash is no monitor's has an allowance of its own: refused 401 while it lasts
    # (the database knows no such device), 429 past it, before the database is asked; the monitor's
    # allowance is untouched.
    answers = [post_vitals(ward, "dev_" + "x" * 43, reading(at)) for _ in range(PER_DEVICE + 2)]
    assert [answer.status_code for answer in answers] == [401] * PER_DEVICE + [429, 429]
    for refused in answers[:PER_DEVICE]:
        assert_error(refused, 401, "unauthorized")
    for limited in answers[PER_DEVICE:]:
        assert assert_error(limited, 429, "rate_limited")["details"]["per"] == "device"
    for second in range(PER_DEVICE):
        posted(ward, token, reading(at + timedelta(seconds=second)))
