"""Patients, diagnoses and the headache diary over HTTP, on PostgreSQL and on SQLite: search, corrections,
one diary entry a day, the summary with its trend around infusions, and bad input answered 4xx."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import pytest

from clinic.auth import issue_token
from clinic.db import new_id, utcnow
from clinic.testing import assert_error
from records import db
from records.app import create_app
from tests.integration.records.support import outbox_events, register


def today(client) -> date:
    return datetime.now(client.settings.timezone).date()


def ids_found(client, **query) -> set[str]:
    """The ids of the patients the front desk finds with this search."""
    response = client.get("/patients", query_string=query, headers=client.as_role("front_desk"))
    assert response.status_code == 200, response.get_data(as_text=True)
    return {patient["id"] for patient in response.get_json()}


# --- patients ---------------------------------------------------------------------------------


def test_the_front_desk_finds_a_patient_by_the_whole_family_name_without_case_or_accents(client):
    josé = register(client, given_name="José", family_name="Álvarez Ruiz", birth_date="1971-02-03")
    register(client, given_name="Joseph", family_name="Alvin", birth_date="1971-02-03")

    assert ids_found(client, family_name="ALVAREZ ruiz") == {josé["id"]}
    assert ids_found(client, family_name="alvarez") == set()                       # the whole family name, not a part of it
    assert ids_found(client, family_name="Álvarez Ruiz", name="jo", birth_date="1971-02-03") == {josé["id"]}
    assert ids_found(client, family_name="alvarez ruiz", birth_date="1971-02-04") == set()
    assert ids_found(client, family_name="100%_") == set()                        # typed wildcards are plain characters


def test_a_birth_date_with_two_letters_of_a_name_finds_a_patient(client):
    josé = register(client, given_name="Josué", family_name="Ruelas Ortiz", birth_date="1962-04-05")
    joseph = register(client, given_name="Johan", family_name="Brandt", birth_date="1962-04-05")

    assert ids_found(client, birth_date="1962-04-05", name="jo") == {josé["id"], joseph["id"]}
    assert ids_found(client, birth_date="1962-04-05", name="RU") == {josé["id"]}   # any word of either name, without case
    assert ids_found(client, birth_date="1962-04-05", name="osu") == set()          # the start of a word, not any part of it
    assert ids_found(client, birth_date="1962-04-06", name="jo") == set()


@pytest.mark.parametrize("query, field", [
    ({}, "family_name"),
    ({"name": "al"}, "name"),                              # two letters alone would list every Al..., 50 at a time
    ({"name": "alvarez ruiz"}, "name"),                   # a name without a birth date is a prefix search all the same
    ({"birth_date": "1971-02-03"}, "name"),               # a birth date alone lists everyone born that day
    ({"birth_date": "1971-02-03", "name": "j"}, "name"),  # ... and so does one letter with it
    ({"name": "a"}, "name"), ({"name": "--"}, "name"), ({"family_name": "--"}, "family_name"),
    # Letters that fold to nothing (GREEK YPOGEGRAMMENI, HALFWIDTH KATAKANA SOUND MARKS): searched, they
    # would be no letters at all, so everyone born that day, or every family name that folds to nothing.
    ({"birth_date": "1971-02-03", "name": "\u037a\u037a"}, "name"), ({"birth_date": "1971-02-03", "name": "\uff9e\uff9f"}, "name"),
    ({"birth_date": "1971-02-03", "name": "j\u037a"}, "name"), ({"family_name": "\u037a"}, "family_name"),
    ({"family_name": "\uff9f -"}, "family_name"),
    ({"birth_date": "yesterday"}, "birth_date"), ({"ssn": "1"}, "ssn"),
])
def test_a_search_without_enough_to_find_one_patient_is_a_422_naming_the_field(client, query, field):
    error = assert_error(client.get("/patients", query_string=query, headers=client.as_role("front_desk")), 422)
    assert field in error["details"]


def test_names_that_folding_lengthens_are_registered_corrected_and_found(client):
    """ß folds to "ss" and U+FDFA to eighteen characters: a 100-character name folds past 100 (and a
    whole name past 201), which the database must hold, not refuse with a 500."""
    desk = client.as_role("front_desk")

    sharp = register(client, given_name="ß" * 100, family_name="x" * 99 + "ß", birth_date="1990-01-02")
    ligature = register(client, given_name="Amal", family_name="\ufdfa" * 100, birth_date="1990-01-02")
    assert ids_found(client, family_name="X" * 99 + "\u1e9e") == {sharp["id"]}           # capital sharp s, folded "ss" too
    assert ids_found(client, family_name="\ufdfa" * 100) == {ligature["id"]}
    assert ids_found(client, birth_date="1990-01-02", name="ss") == {sharp["id"]}
    assert ids_found(client, birth_date="1990-01-02", name="\u00dfs") == {sharp["id"]}   # ß is "ss" as it is searched
    renamed = client.patch(f"/patients/{ligature['id']}", json={"family_name": "ß" * 100}, headers=desk)
    assert renamed.status_code == 200, renamed.get_data(as_text=True)
    assert ids_found(client, family_name="\u1e9e" * 100) == {ligature["id"]} and ids_found(client, family_name="\ufdfa" * 100) == set()


def test_the_search_allowance_is_kept_per_whole_subject_as_every_other_allowance_is(records_database, settings_for):
    """Two subjects alike in their first 200 characters (what actor() keeps) are two staff members."""
    settings = settings_for("records", records_database, rate_limit_patient_search="1/minute")
    app = create_app(settings)
    client = app.test_client()
    try:
        for subject in ("d" * 200 + "1", "d" * 200 + "2"):
            headers = {"Authorization": f"Bearer {issue_token(settings, subject, ['front_desk'])}"}
            assert client.get("/patients", query_string={"family_name": "Park"}, headers=headers).status_code == 200
            error = assert_error(client.get("/patients", query_string={"family_name": "Park"}, headers=headers), 429)
            assert error["details"]["per"] == "patient_search"
    finally:
        app.extensions["clinic.engine"].dispose()


def test_a_search_answers_names_and_birth_date_but_no_contact_details(client):
    patient = register(client, given_name="Maria", family_name="Contactless", birth_date="1980-05-06",
                       email="maria@example.org", phone="+1 555 0100")
    found, = client.get("/patients", query_string={"family_name": "contactless"}, headers=client.as_role("front_desk")).get_json()
    assert found == {"id": patient["id"], "medical_record_number": patient["medical_record_number"], "given_name": "Maria",
                     "family_name": "Contactless", "birth_date": "1980-05-06"}


def test_a_search_term_never_reaches_the_log(client, caplog):
    caplog.set_level("DEBUG")
    response = client.get("/patients", query_string={"family_name": "Zebedee"}, headers=client.as_role("front_desk"))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "Zebedee" not in caplog.text and "zebedee" not in caplog.text


def test_correcting_a_name_sends_the_contact_again_and_keeps_the_search_current(client, records_engine):
    patient = register(client, given_name="Jon")
    desk = client.as_role("front_desk")
    changed = client.patch(f"/patients/{patient['id']}", json={"given_name": "John", "birth_date": "1979-06-15"}, headers=desk)
    assert changed.status_code == 200 and changed.get_json()["birth_date"] == "1979-06-15"
    contacts = outbox_events(records_engine, "records.patient.contact_changed", about=patient["id"])
    assert [(event.data["given_name"], event.data["contact_version"]) for event in contacts] == [("Jon", 1), ("John", 2)]
    # A change that is no contact detail (the birth date) sends nothing and leaves the contact version as it is.
    assert client.patch(f"/patients/{patient['id']}", json={"birth_date": "1979-06-16"}, headers=desk).status_code == 200
    assert len(outbox_events(records_engine, "records.patient.contact_changed", about=patient["id"])) == 2
    found = client.get("/patients", query_string={"birth_date": "1979-06-16", "name": "john"}, headers=desk).get_json()
    assert patient["id"] in {row["id"] for row in found}


def test_a_correction_that_makes_two_records_one_person_is_a_409_naming_the_other(client):
    first = register(client, email="twin@example.org")
    second = register(client, email="other@example.org")
    error = assert_error(client.patch(f"/patients/{second['id']}", json={"email": "TWIN@example.org"},
                                      headers=client.as_role("front_desk")), 409, "conflict")
    assert error["details"]["patient_id"] == first["id"]


@pytest.mark.parametrize("field, value", [("given_name", "A\x00na"), ("family_name", "   "), ("given_name", "x" * 101)])
def test_control_characters_blank_and_overlong_names_are_422(client, field, value):
    body = {"given_name": "Ana", "family_name": "Reyes", "birth_date": "1984-03-09", "sex": "female", "email": "nul@example.org"}
    error = assert_error(client.post("/patients", json={**body, field: value}, headers=client.as_role("front_desk")), 422)
    assert list(error["details"]) == [field]


# --- diagnoses --------------------------------------------------------------------------------


def test_a_neurologist_records_and_resolves_a_diagnosis(client):
    patient = register(client)
    neuro = client.as_role("neurologist")
    created = client.post(f"/patients/{patient['id']}/diagnoses", headers=neuro,
                          json={"code": "g44.41", "description": "Medication-overuse headache", "onset_date": "2024-01-10"})
    assert created.status_code == 201, created.get_data(as_text=True)
    diagnosis = created.get_json()
    assert (diagnosis["code"], diagnosis["status"]) == ("G44.41", "active")
    again = assert_error(client.post(f"/patients/{patient['id']}/diagnoses", headers=neuro,
                                     json={"code": "G4441", "description": "again"}), 409, "conflict")
    assert again["details"]["diagnosis_id"] == diagnosis["id"]

    resolved = client.patch(f"/patients/{patient['id']}/diagnoses/{diagnosis['id']}", json={"status": "resolved"}, headers=neuro)
    assert resolved.status_code == 200 and resolved.get_json()["status"] == "resolved"
    assert client.post(f"/patients/{patient['id']}/diagnoses", headers=neuro,
                       json={"code": "G44.41", "description": "relapse"}).status_code == 201
    listed = client.get(f"/patients/{patient['id']}/diagnoses", headers=neuro).get_json()
    assert [(row["code"], row["status"]) for row in listed] == [("G44.41", "active"), ("G44.41", "resolved")]


@pytest.mark.parametrize("body, field", [
    ({"code": "G4.3709", "description": "x"}, "code"),
    ({"code": "migraine", "description": "x"}, "code"),
    ({"code": 43, "description": "x"}, "code"),
    ({"code": "G43.709"}, "description"),
    ({"code": "G43.709", "description": "x", "onset_date": "2999-01-01"}, "onset_date"),
    ({"code": "G43.709", "description": "x", "onset_date": "1950-01-01"}, "onset_date"),   # before the patient was born
    ({"code": "G43.709", "description": "x", "status": "suspected"}, "status"),
])
def test_bad_diagnosis_input_is_a_422_naming_the_field(client, body, field):
    patient = register(client)
    error = assert_error(client.post(f"/patients/{patient['id']}/diagnoses", json=body, headers=client.as_role("neurologist")), 422)
    assert field in error["details"]


def test_diagnoses_are_for_neurologists(client):
    patient = register(client)
    for role in ("nurse", "front_desk", "admin"):
        assert_error(client.post(f"/patients/{patient['id']}/diagnoses", json={"code": "G43.709", "description": "x"},
                                 headers=client.as_role(role)), 403)
    assert_error(client.patch(f"/patients/{patient['id']}/diagnoses/{new_id()}", json={"status": "resolved"},
                              headers=client.as_role("neurologist")), 404, "not_found")


# --- diary ------------------------------------------------------------------------------------


def diary_entry(client, patient_id, day: date, headache=True, intensity=6, medication=(), role="nurse"):
    body = {"entry_date": day.isoformat(), "headache": headache, "acute_medication": list(medication)}
    if intensity is not None:
        body["worst_intensity"] = intensity
    return client.post(f"/patients/{patient_id}/diary", json=body, headers=client.as_role(role))


def test_one_entry_a_day_a_second_is_a_409_naming_the_first_which_can_be_corrected(client):
    patient = register(client)
    day = today(client) - timedelta(days=1)
    first = diary_entry(client, patient["id"], day, intensity=7, medication=["triptan"])
    assert first.status_code == 201, first.get_data(as_text=True)
    error = assert_error(diary_entry(client, patient["id"], day, headache=False, intensity=None), 409, "conflict")
    assert error["details"]["entry_id"] == first.get_json()["id"]

    corrected = client.put(f"/patients/{patient['id']}/diary/{first.get_json()['id']}", headers=client.as_role("nurse"),
                           json={"headache": True, "worst_intensity": 5, "acute_medication": ["simple_analgesic"]})
    assert corrected.status_code == 200, corrected.get_data(as_text=True)
    listed = client.get(f"/patients/{patient['id']}/diary", headers=client.as_role("nurse")).get_json()
    assert [(row["entry_date"], row["worst_intensity"], row["acute_medication"]) for row in listed] == [
        (day.isoformat(), 5, ["simple_analgesic"])]


@pytest.mark.parametrize("changes, field", [
    ({"worst_intensity": 11}, "worst_intensity"),
    ({"worst_intensity": -1}, "worst_intensity"),
    ({"worst_intensity": 6.5}, "worst_intensity"),
    ({"worst_intensity": None}, "worst_intensity"),                    # a headache day needs its intensity
    ({"headache": False, "worst_intensity": 4}, "worst_intensity"),
    ({"headache": "sometimes"}, "headache"),
    ({"acute_medication": ["aspirin"]}, "acute_medication"),
    ({"acute_medication": ["triptan", "triptan"]}, "acute_medication"),
    ({"acute_medication": "triptan"}, "acute_medication"),
    ({"entry_date": "2999-01-01"}, "entry_date"),
    ({"entry_date": "1950-01-01"}, "entry_date"),                      # before the patient was born
    ({"entry_date": "31/01/2026"}, "entry_date"),
])
def test_bad_diary_input_is_a_422_naming_the_field(client, changes, field):
    patient = register(client)
    body = {"entry_date": (today(client) - timedelta(days=2)).isoformat(), "headache": True, "worst_intensity": 6, **changes}
    error = assert_error(client.post(f"/patients/{patient['id']}/diary", json=body, headers=client.as_role("nurse")), 422)
    assert field in error["details"]


def test_the_front_desk_neither_reads_nor_writes_the_diary(client):
    patient = register(client)
    assert_error(diary_entry(client, patient["id"], today(client), role="front_desk"), 403)
    for path in ("diary", "diary/summary", "encounters"):
        assert_error(client.get(f"/patients/{patient['id']}/{path}", headers=client.as_role("front_desk")), 403)
    assert diary_entry(client, patient["id"], today(client), role="neurologist").status_code == 201


def add_encounter(engine, patient_id: str, day: date, zone, pain=(8, 3)) -> None:
    """An infusion on `day` (clinic time), as the worker records it from sessions.session.completed."""
    started = datetime.combine(day, time(10), tzinfo=zone).astimezone(timezone.utc)
    with engine.begin() as connection:
        connection.execute(db.encounters.insert().values(
            id=new_id(), session_id=new_id(), appointment_id=new_id(), patient_id=patient_id, room_id=new_id(), room_name="Infusion 1",
            started_at=started, ended_at=started + timedelta(hours=2), drugs_given=[], pain_before=pain[0], pain_after=pain[1],
            highest_news2=1, alerts=[], event_id=new_id(), recorded_at=utcnow()))


def test_the_summary_shows_frequency_intensity_overuse_and_the_trend_around_an_infusion(client, records_engine):
    patient = register(client)
    now = today(client)
    infusion = now - timedelta(days=30)
    for offset in range(1, 31):      # the 30 days before: a headache every day at 8, a triptan on 12 of them
        assert diary_entry(client, patient["id"], infusion - timedelta(days=offset), intensity=8,
                           medication=["triptan"] if offset <= 12 else []).status_code == 201
    for offset in range(1, 31):      # the 30 days after: a headache one day in three, at 4, no triptans
        headache = offset % 3 == 0
        assert diary_entry(client, patient["id"], infusion + timedelta(days=offset), headache=headache,
                           intensity=4 if headache else None).status_code == 201
    add_encounter(records_engine, patient["id"], infusion, client.settings.timezone)

    response = client.get(f"/patients/{patient['id']}/diary/summary", query_string={"days": 90, "around_days": 30},
                          headers=client.as_role("nurse"))
    assert response.status_code == 200, response.get_data(as_text=True)
    summary = response.get_json()
    assert summary["window"]["days_recorded"] == 60 and summary["window"]["headache_days"] == 40
    assert summary["window"]["headache_days_per_30"] == 20.0
    overuse = summary["medication_overuse"]
    assert overuse["enough_data"] and not overuse["flag"]           # 12 triptan days over 60 recorded: 6 a month
    assert overuse["days"]["triptan"] == 12
    trend, = summary["infusions"]
    assert trend["infusion_date"] == infusion.isoformat()
    assert (trend["before"]["headache_days_per_30"], trend["after"]["headache_days_per_30"]) == (30.0, 10.0)
    assert (trend["before"]["mean_intensity"], trend["after"]["mean_intensity"]) == (8.0, 4.0)
    assert (trend["change_in_headache_days_per_30"], trend["change_in_mean_intensity"]) == (-20.0, -4.0)


def test_triptans_on_ten_days_a_month_raise_the_overuse_flag(client):
    patient = register(client)
    now = today(client)
    for offset in range(30):
        assert diary_entry(client, patient["id"], now - timedelta(days=offset), medication=["triptan"] if offset % 3 == 0 else [],
                           headache=True).status_code == 201
    summary = client.get(f"/patients/{patient['id']}/diary/summary?days=30", headers=client.as_role("neurologist")).get_json()
    assert summary["medication_overuse"]["flag"] and summary["medication_overuse"]["criteria"] == ["8.2.2"]


@pytest.mark.parametrize("query, field", [("days=0", "days"), ("days=1000", "days"), ("days=many", "days"),
                                          ("around_days=1", "around_days")])
def test_a_bad_summary_query_is_a_422(client, query, field):
    patient = register(client)
    error = assert_error(client.get(f"/patients/{patient['id']}/diary/summary?{query}", headers=client.as_role("nurse")), 422)
    assert field in error["details"]


def test_an_unknown_patient_has_no_diary_no_summary_and_no_encounters(client):
    unknown = new_id()
    for path in ("diary", "diary/summary", "encounters", "diagnoses"):
        assert_error(client.get(f"/patients/{unknown}/{path}", headers=client.as_role("neurologist")), 404, "not_found")
    assert_error(diary_entry(client, unknown, today(client)), 404, "not_found")
