"""Input at the edges (the ends of the calendar, control characters) is a 422 naming the field, never a 500."""

from __future__ import annotations

import uuid

import pytest

from clinic.testing import assert_error

FAR = ["9999-12-31", "0001-01-01"]


@pytest.mark.parametrize("day", FAR)
def test_a_date_at_the_end_of_the_calendar_is_refused(clinic, day):
    assert "date" in assert_error(clinic.call("GET", f"/appointments?date={day}", role="nurse"), 422)["details"]
    assert "date" in assert_error(clinic.call("GET", f"/board?date={day}", role="nurse"), 422)["details"]
    assert "date" in assert_error(clinic.call("POST", "/closures", role="admin", json={"date": day, "reason": "x"}), 422)["details"]
    assert "from" in assert_error(clinic.call("GET", f"/closures?from={day}", role="admin"), 422)["details"]


@pytest.mark.parametrize("moment", ["9999-12-31T23:00:00+00:00", "0001-01-01T00:00:00+05:00"])
def test_a_moment_at_the_end_of_the_calendar_is_refused(clinic, moment):
    patient = clinic.plan()
    booking = {"patient_id": patient, "kind": "infusion", "starts_at": moment}
    assert "starts_at" in assert_error(clinic.call("POST", "/appointments", json=booking), 422)["details"]
    query = {"patient_id": patient, "kind": "infusion", "from": moment, "to": moment}
    assert "from" in assert_error(clinic.call("GET", "/availability", role="nurse", query_string=query), 422)["details"]


@pytest.mark.parametrize("text", ["bad\x00byte", "   ", "line\nbreak"])
def test_free_text_with_control_characters_or_only_blanks_is_refused(clinic, text):
    assert "name" in assert_error(clinic.call("POST", "/rooms", role="admin", json={"name": text, "kind": "exam"}), 422)["details"]
    closure = {"date": "2030-02-01", "reason": text}
    assert "reason" in assert_error(clinic.call("POST", "/closures", role="admin", json=closure), 422)["details"]
    cancel = clinic.call("POST", f"/appointments/{uuid.uuid4()}/cancel", json={"reason": text})
    assert "reason" in assert_error(cancel, 422)["details"]
