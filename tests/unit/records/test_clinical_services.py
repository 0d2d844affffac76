"""Diagnoses, the headache diary and encounters, their use cases called directly on a unit of work:
what is stored, and each refusal (unknown patient, a date before birth, a second of what is unique)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from clinic.errors import Conflict, NotFound, RuleViolation
from records import db
from records.services import diagnoses, diary, encounters
from tests.unit.records.examples import NOW

UNKNOWN = "7b0f0d3e-6a56-4a4b-9a8e-1d2f3c4b5a69"
MIGRAINE = {"code": "G43.709", "description": "Chronic migraine", "onset_date": date(2010, 1, 1), "status": "active"}
NEW_YORK = ZoneInfo("America/New_York")


# --- diagnoses --------------------------------------------------------------------------------


def test_a_diagnosis_is_recorded_resolved_and_may_then_come_back(uow, patient, stored):
    recorded = diagnoses.record_diagnosis(uow(), patient["id"], dict(MIGRAINE), by="dr-a")
    assert (recorded["recorded_by"], recorded["created_at"]) == ("dr-a", NOW)
    resolved = diagnoses.change_diagnosis(uow(), patient["id"], recorded["id"], {"status": "resolved"})
    assert stored(db.diagnoses, recorded["id"])["status"] == resolved["status"] == "resolved"
    again = diagnoses.record_diagnosis(uow(), patient["id"], {**MIGRAINE, "description": "relapse"}, by="dr-a")
    assert again["id"] != recorded["id"]


def test_a_code_active_twice_for_one_patient_is_a_conflict_naming_the_first(uow, patient):
    first = diagnoses.record_diagnosis(uow(), patient["id"], dict(MIGRAINE), by="dr-a")
    with pytest.raises(Conflict) as refused:
        diagnoses.record_diagnosis(uow(), patient["id"], dict(MIGRAINE), by="dr-a")
    assert refused.value.details == {"diagnosis_id": first["id"], "code": "G43.709"}

    resolved = diagnoses.record_diagnosis(uow(), patient["id"], {**MIGRAINE, "status": "resolved"}, by="dr-a")
    with pytest.raises(Conflict):
        diagnoses.change_diagnosis(uow(), patient["id"], resolved["id"], {"status": "active"})


def test_an_onset_before_birth_or_an_unknown_patient_or_diagnosis_is_refused(engine, uow, patient):
    with pytest.raises(RuleViolation, match="birth"):
        diagnoses.record_diagnosis(uow(), patient["id"], {**MIGRAINE, "onset_date": date(1980, 1, 1)}, by="dr-a")
    with pytest.raises(NotFound):
        diagnoses.record_diagnosis(uow(), UNKNOWN, dict(MIGRAINE), by="dr-a")
    with pytest.raises(NotFound):
        diagnoses.change_diagnosis(uow(), patient["id"], UNKNOWN, {"status": "resolved"})
    with engine.connect() as connection:
        assert diagnoses.patient_diagnoses(connection, patient["id"]) == []


# --- diary ------------------------------------------------------------------------------------


def day(entry_date: date, headache=True, intensity=6, medication=()) -> dict:
    return {"entry_date": entry_date, "headache": headache, "worst_intensity": intensity if headache else None,
            "acute_medication": list(medication)}


def test_a_diary_day_is_added_and_corrected_by_whoever_corrects_it(engine, uow, patient, stored):
    entry = diary.add_entry(uow(), patient["id"], day(date(2026, 3, 1), medication=["triptan"]), by="nurse-1")
    corrected = diary.correct_entry(uow(), patient["id"], entry["id"], {"headache": False, "worst_intensity": None,
                                                                        "acute_medication": []}, by="nurse-2")
    row = stored(db.diary_entries, entry["id"])
    assert (row["entry_date"], row["headache"], row["recorded_by"]) == (date(2026, 3, 1), False, "nurse-2") == (
        corrected["entry_date"], corrected["headache"], corrected["recorded_by"])
    with engine.connect() as connection:
        assert [row["id"] for row in diary.entries_between(connection, patient["id"], date(2026, 2, 1), date(2026, 3, 1))] == [entry["id"]]


def test_a_second_entry_for_a_day_is_a_conflict_naming_the_first(uow, patient):
    first = diary.add_entry(uow(), patient["id"], day(date(2026, 3, 1)), by="nurse-1")
    with pytest.raises(Conflict) as refused:
        diary.add_entry(uow(), patient["id"], day(date(2026, 3, 1), headache=False), by="nurse-1")
    assert refused.value.details == {"entry_id": first["id"], "entry_date": "2026-03-01"}


def test_a_day_before_birth_an_unknown_patient_or_an_unknown_entry_is_refused(engine, uow, patient):
    with pytest.raises(RuleViolation, match="birth"):
        diary.add_entry(uow(), patient["id"], day(date(1984, 3, 8)), by="nurse-1")
    with pytest.raises(NotFound):
        diary.add_entry(uow(), UNKNOWN, day(date(2026, 3, 1)), by="nurse-1")
    with pytest.raises(NotFound):
        diary.correct_entry(uow(), patient["id"], UNKNOWN, {"headache": False, "worst_intensity": None, "acute_medication": []},
                            by="nurse-1")
    with engine.connect() as connection, pytest.raises(NotFound):
        diary.summary(connection, UNKNOWN, date(2026, 3, 1), 30, 7, NEW_YORK)


def test_the_summary_dates_infusions_in_the_clinics_time_zone_and_compares_the_days_around_them(engine, uow, patient):
    infusion_day = date(2026, 2, 15)
    for offset in range(1, 11):
        diary.add_entry(uow(), patient["id"], day(infusion_day - timedelta(days=offset), intensity=8), by="nurse-1")
        diary.add_entry(uow(), patient["id"], day(infusion_day + timedelta(days=offset), headache=offset % 2 == 0, intensity=4),
                        by="nurse-1")
    # 02:00 UTC on the 16th is still the 15th in New York.
    started = datetime(2026, 2, 16, 2, 0, tzinfo=timezone.utc)
    encounters.record_encounter(uow(), completed(patient["id"], started), event_id=str(uuid.uuid4()))
    with engine.connect() as connection:
        summary = diary.summary(connection, patient["id"], date(2026, 3, 1), 30, 10, NEW_YORK)
    trend, = summary["infusions"]
    assert trend.infusion_date == infusion_day
    assert (trend.before.headache_days_per_30, trend.after.headache_days_per_30) == (30.0, 15.0)
    assert summary["window"].days_recorded == 20


# --- encounters -------------------------------------------------------------------------------


def completed(patient_id: str, started: datetime, session_id: str | None = None) -> dict:
    """sessions.session.completed's payload as the handler passes it on (drugs and alerts as JSON)."""
    return {"session_id": session_id or str(uuid.uuid4()), "appointment_id": str(uuid.uuid4()), "patient_id": patient_id,
            "room_id": str(uuid.uuid4()), "room_name": "Infusion 2", "started_at": started, "ended_at": started + timedelta(hours=2),
            "drugs_given": [{"name": "ketorolac", "dose": "30", "unit": "mg", "route": "IV", "given_at": started.isoformat(),
                             "rate": None}],
            "pain_before": 8, "pain_after": 3, "highest_news2": 2, "alerts": []}


def test_a_completed_session_is_one_encounter_however_often_it_is_announced(engine, uow, patient):
    session = completed(patient["id"], NOW)
    assert encounters.record_encounter(uow(), session, event_id="event-1") is True
    assert encounters.record_encounter(uow(), {**session, "appointment_id": str(uuid.uuid4())}, event_id="event-2") is False
    with engine.connect() as connection:
        encounter, = encounters.patient_encounters(connection, patient["id"])
    assert (encounter["event_id"], encounter["recorded_at"], encounter["drugs_given"][0]["dose"]) == ("event-1", NOW, "30")


def test_a_session_of_a_patient_records_does_not_know_is_refused_so_it_is_kept_for_later(engine, uow):
    with pytest.raises(encounters.UnknownPatient):
        encounters.record_encounter(uow(), completed(UNKNOWN, NOW), event_id="event-1")
    with engine.connect() as connection, pytest.raises(NotFound):
        encounters.patient_encounters(connection, UNKNOWN)
