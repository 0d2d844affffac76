"""The medication administration record over HTTP, on PostgreSQL and on SQLite: a drug of the session's
plan recorded as given; every refusal (422 with its reason, nothing written); the 24-hour maximum
across the patient's sessions, with voided administrations left out and late entries held against the
later ones; two administrations racing past the maximum (one refused); roles and the audit."""

from __future__ import annotations

from datetime import timedelta

import pytest

from clinic.events import DrugGiven
from sessions.db import care
from tests.integration.sessions.support import KETOROLAC, ONDANSETRON, checked_in_session, new_id, started_session
from tests.integration.sessions.support_care import care_rows, drug_id, give, given, race

KETOROLAC_30_A_DAY = {**KETOROLAC, "max_per_24h": "30"}


def test_a_nurse_records_a_drug_of_the_plan_as_given_by_her(ward):
    session = started_session(ward)
    ward.clock.advance(minutes=10)
    recorded = given(ward, session["id"], drug_id(session, "ketorolac"), dose="15", rate=None)
    assert {key: recorded[key] for key in ("name", "dose", "unit", "route", "given_by", "voided_at")} == \
        {"name": "ketorolac", "dose": "15", "unit": "mg", "route": "IV", "given_by": "nurse-ana", "voided_at": None}
    ward.clock.advance(minutes=1)
    saline = given(ward, session["id"], drug_id(session, "sodium chloride 0.9%"), dose="1000", unit="mL", rate="500 mL/h",
                   role="neurologist", subject="dr-lee")
    assert (saline["rate"], saline["given_by"]) == ("500 mL/h", "dr-lee")
    response = ward.call("GET", f"/sessions/{session['id']}/medications")
    assert response.status_code == 200
    assert [item["id"] for item in response.get_json()] == [recorded["id"], saline["id"]]
    [audit] = ward.audit_trail(action="create", resource="medication", resource_id=recorded["id"])
    assert (audit["patient_id"], audit["outcome"]) == (session["patient_id"], "allowed")
    [audit] = ward.audit_trail(action="read", resource="medication")
    assert audit["patient_id"] == session["patient_id"]


def test_the_record_gives_the_session_its_drugs_in_the_order_given_without_the_voided(ward):
    session = started_session(ward)
    ward.clock.advance(minutes=30)
    later = given(ward, session["id"], drug_id(session, "ondansetron"), dose="4")
    earlier = given(ward, session["id"], drug_id(session, "ketorolac"), given_at=ward.clock() - timedelta(minutes=20))
    voided = given(ward, session["id"], drug_id(session, "ketorolac"), given_at=ward.clock() - timedelta(minutes=10))
    void = ward.call("POST", f"/sessions/{session['id']}/medications/{voided['id']}/void", json={"reason": "wrong chart"})
    assert void.status_code == 200
    with ward.engine.connect() as connection:
        drugs = care.drugs_given(connection, session["id"])
    assert [(drug["name"], drug["given_at"].isoformat()) for drug in drugs] == [
        ("ketorolac", earlier["given_at"]), ("ondansetron", later["given_at"])]
    assert set(drugs[0]) == set(DrugGiven().fields)


def _refusals(session: dict, other_session: dict, now, started_at) -> dict[str, tuple[dict, str]]:
    ketorolac = drug_id(session, "ketorolac")
    return {
        "unknown drug": ({"session_drug_id": new_id()}, "session_drug_id"),
        "another session's drug": ({"session_drug_id": drug_id(other_session, "ketorolac")}, "session_drug_id"),
        "other route": ({"session_drug_id": ketorolac, "route": "IM"}, "route"),
        "other unit": ({"session_drug_id": ketorolac, "unit": "g", "dose": "0.03"}, "unit"),
        "more than planned": ({"session_drug_id": ketorolac, "dose": "30.5"}, "dose"),
        "in the future": ({"session_drug_id": ketorolac, "given_at": now + timedelta(seconds=121)}, "given_at"),
        "before the start": ({"session_drug_id": ketorolac, "given_at": started_at - timedelta(seconds=1)}, "given_at"),
    }


@pytest.mark.parametrize("case", ["unknown drug", "another session's drug", "other route", "other unit", "more than planned",
                                  "in the future", "before the start"])
def test_each_refusal_says_why_and_writes_nothing(ward, case):
    other_session = started_session(ward)
    session = started_session(ward)
    ward.clock.advance(minutes=10)
    changes, field = _refusals(session, other_session, ward.clock(), ward.clock() - timedelta(minutes=10))[case]
    before = care_rows(ward)
    response = give(ward, session["id"], **changes)
    assert response.status_code == 422, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "rule_violation" and field in error["details"], error
    assert care_rows(ward) == before
    [audit] = ward.audit_trail(action="create", resource="medication")
    assert (audit["outcome"], audit["patient_id"]) == ("failed", session["patient_id"])


def test_the_24_hour_maximum_may_be_reached_not_passed_and_the_refusal_writes_nothing(ward):
    session = started_session(ward)
    ketorolac = drug_id(session, "ketorolac")
    for _ in range(4):  # 4 x 30 mg: the plan's 120 mg a day
        ward.clock.advance(minutes=15)
        given(ward, session["id"], ketorolac)
    ward.clock.advance(minutes=15)
    before = care_rows(ward)
    response = give(ward, session["id"], ketorolac, dose="1")
    assert response.status_code == 422
    assert "121 mg" in response.get_json()["error"]["details"]["total_24h"]
    assert care_rows(ward) == before
    assert give(ward, session["id"], drug_id(session, "ondansetron"), dose="4").status_code == 201


def test_the_24_hour_total_counts_the_patients_earlier_session_whatever_the_case_of_the_name(ward):
    first = started_session(ward)
    patient = first["patient_id"]
    for _ in range(3):
        ward.clock.advance(minutes=10)
        given(ward, first["id"], drug_id(first, "ketorolac"))
    assert ward.call("POST", f"/sessions/{first['id']}/abort", json={"reason": "patient_unwell"}).status_code == 200
    ward.clock.advance(hours=5)
    second = started_session(ward, patient_id=patient, drugs=[{**KETOROLAC, "name": "KETOROLAC"}, ONDANSETRON])
    ward.clock.advance(minutes=10)
    given(ward, second["id"], drug_id(second, "KETOROLAC"))
    response = give(ward, second["id"], drug_id(second, "KETOROLAC"))
    assert response.status_code == 422
    assert "150 mg" in response.get_json()["error"]["details"]["total_24h"]
    # Another patient's doses are theirs alone.
    stranger = started_session(ward)
    ward.clock.advance(minutes=1)
    given(ward, stranger["id"], drug_id(stranger, "ketorolac"))
    # A day after the first session's doses, they count no more.
    ward.clock.advance(hours=19)
    assert give(ward, second["id"], drug_id(second, "KETOROLAC")).status_code == 201


def test_a_voided_administration_is_kept_marked_and_left_out_of_the_total(ward):
    session = started_session(ward)
    ketorolac = drug_id(session, "ketorolac")
    doses = []
    for _ in range(4):
        ward.clock.advance(minutes=10)
        doses.append(given(ward, session["id"], ketorolac))
    assert give(ward, session["id"], ketorolac).status_code == 422
    path = f"/sessions/{session['id']}/medications/{doses[1]['id']}/void"
    response = ward.call("POST", path, subject="nurse-bo", json={"reason": "entered twice"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert (response.get_json()["voided_by"], response.get_json()["void_reason"]) == ("nurse-bo", "entered twice")
    again = ward.call("POST", path, json={"reason": "again"})
    assert again.status_code == 409 and again.get_json()["error"]["details"]["voided_by"] == "nurse-bo"
    assert give(ward, session["id"], ketorolac).status_code == 201
    record = ward.call("GET", f"/sessions/{session['id']}/medications").get_json()
    assert len(record) == 5
    assert [item["void_reason"] for item in record if item["voided_at"]] == ["entered twice"]
    [audit] = ward.audit_trail(action="update", resource="medication", outcome="allowed")
    assert (audit["resource_id"], audit["patient_id"]) == (doses[1]["id"], session["patient_id"])


def test_an_administration_of_an_ended_session_may_still_be_voided_freeing_the_24_hours(ward):
    """A dose recorded in error in a session that has ended would otherwise hold the next day's doses back."""
    first = started_session(ward, drugs=[KETOROLAC_30_A_DAY])
    ward.clock.advance(minutes=10)
    wrong = given(ward, first["id"], drug_id(first, "ketorolac"))
    assert ward.call("POST", f"/sessions/{first['id']}/abort", json={"reason": "patient_left"}).status_code == 200
    ward.clock.advance(hours=2)
    second = started_session(ward, patient_id=first["patient_id"], drugs=[KETOROLAC_30_A_DAY])
    ward.clock.advance(minutes=10)
    assert give(ward, second["id"], drug_id(second, "ketorolac")).status_code == 422
    void = ward.call("POST", f"/sessions/{first['id']}/medications/{wrong['id']}/void", json={"reason": "never given"})
    assert void.status_code == 200
    assert give(ward, second["id"], drug_id(second, "ketorolac")).status_code == 201


def test_voiding_what_is_not_there_is_404(ward):
    session = started_session(ward)
    other = started_session(ward)
    ward.clock.advance(minutes=5)
    theirs = given(ward, other["id"], drug_id(other, "ketorolac"))
    for path in (f"/sessions/{session['id']}/medications/{new_id()}/void", f"/sessions/{session['id']}/medications/{theirs['id']}/void",
                 f"/sessions/{new_id()}/medications/{theirs['id']}/void"):
        response = ward.call("POST", path, json={"reason": "wrong"})
        assert response.status_code == 404, path
    assert ward.call("POST", f"/sessions/{other['id']}/medications/{theirs['id']}/void", json={"reason": ""}).status_code == 422


def test_a_dose_recorded_late_is_held_against_the_doses_recorded_after_it(ward):
    session = started_session(ward)  # 09:00; ondansetron 4 mg, at most 16 mg a day
    ondansetron = drug_id(session, "ondansetron")
    ward.clock.advance(hours=3)
    start = ward.clock() - timedelta(hours=3)
    for minutes in (30, 90, 150, 170):
        given(ward, session["id"], ondansetron, dose="4", given_at=start + timedelta(minutes=minutes))
    # At 09:10 alone it would be the first dose of the day, but the 24 hours up to 11:50 would hold 20 mg.
    response = give(ward, session["id"], ondansetron, dose="4", given_at=start + timedelta(minutes=10))
    assert response.status_code == 422
    assert (start + timedelta(minutes=170)).isoformat() in response.get_json()["error"]["details"]["total_24h"]


def test_only_a_started_session_takes_medications(ward):
    waiting = checked_in_session(ward)
    response = give(ward, waiting["id"], drug_id(waiting, "ketorolac"))
    assert response.status_code == 409 and response.get_json()["error"]["details"]["status"] == "waiting"
    assert give(ward, new_id(), new_id()).status_code == 404
    session = started_session(ward)
    ward.call("POST", f"/sessions/{session['id']}/abort", json={"reason": "equipment"})
    assert give(ward, session["id"], drug_id(session, "ketorolac")).status_code == 409
    assert care_rows(ward)["medications"] == 0
    assert ward.call("GET", f"/sessions/{new_id()}/medications").status_code == 404


@pytest.mark.parametrize("changes", [{"dose": "0"}, {"dose": "-1"}, {"dose": "30.12345"}, {"dose": 29.99999}, {"dose": 0.00001},
                                     {"dose": "3e1"}, {"unit": "MG"},
                                     {"route": "iv"}, {"rate": "fast"}, {"given_at": "2030-01-07T09:10:00"}, {"session_drug_id": "x"}])
def test_malformed_administrations_are_422_naming_the_field(ward, changes):
    session = started_session(ward)
    ward.clock.advance(minutes=5)
    body = {"session_drug_id": drug_id(session, "ketorolac"), "dose": "30", "unit": "mg", "route": "IV",
            "given_at": ward.clock().isoformat(), **changes}
    response = ward.call("POST", f"/sessions/{session['id']}/medications", json=body)
    assert response.status_code == 422
    assert set(response.get_json()["error"]["details"]) == set(changes)
    assert care_rows(ward)["medications"] == 0


def test_nurses_and_neurologists_record_and_read_the_medications_others_do_not(ward):
    session = started_session(ward)
    ward.clock.advance(minutes=5)
    ketorolac = drug_id(session, "ketorolac")
    for role in ("front_desk", "admin"):
        assert give(ward, session["id"], ketorolac, role=role).status_code == 403
        assert ward.call("GET", f"/sessions/{session['id']}/medications", role=role).status_code == 403
    assert care_rows(ward)["medications"] == 0
    recorded = given(ward, session["id"], ketorolac, role="neurologist")
    void = ward.call("POST", f"/sessions/{session['id']}/medications/{recorded['id']}/void", role="front_desk", json={"reason": "x"})
    assert void.status_code == 403
    assert ward.call("GET", f"/sessions/{session['id']}/medications", role="neurologist").status_code == 200
    assert {row["outcome"] for row in ward.audit_trail(resource="medication", roles="front_desk")} == {"denied"}


ROUNDS = 6


def test_two_administrations_racing_past_the_24_hour_maximum_one_is_refused(racing_ward):
    """Each round a new patient whose plan allows 30 mg of ketorolac a day; two nurses record 30 mg
    at the same moment, in one session (odd rounds) or in two sessions of the patient (even rounds,
    where only the patient's ledger stands between them)."""
    ward = racing_ward
    for round_number in range(ROUNDS):
        first = started_session(ward, drugs=[KETOROLAC_30_A_DAY])
        second = first if round_number % 2 else started_session(ward, patient_id=first["patient_id"], drugs=[KETOROLAC_30_A_DAY])
        ward.clock.advance(minutes=5)
        at = ward.clock().isoformat()
        bodies = [(f"/sessions/{session['id']}/medications",
                   {"session_drug_id": drug_id(session, "ketorolac"), "dose": "30", "unit": "mg", "route": "IV", "given_at": at})
                  for session in (first, second)]
        results = race(ward, bodies)
        assert sorted(status for status, _ in results) == [201, 422], (round_number, results)
        [refused] = [answer for status, answer in results if status == 422]
        assert "total_24h" in refused["error"]["details"]
        recorded = ward.rows(care.medications, patient_id=first["patient_id"])
        assert len(recorded) == 1, round_number
