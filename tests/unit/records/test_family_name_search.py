"""A patient search counts and compares letters as they are folded, and the job that folds the family
names of patients an older records pod wrote (a rolling deploy) stores the right fold, once."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from clinic import audit
from clinic.unit_of_work import UnitOfWork
from records import SERVICE, db, domain
from records.services import patients
from tests.unit.records.examples import ANA, NOW

# Letters (str.isalpha) that fold to nothing: GREEK YPOGEGRAMMENI, two Arabic presentation forms,
# HALFWIDTH KATAKANA VOICED and SEMI-VOICED SOUND MARK.
FOLD_TO_NOTHING = ("\u037a", "\ufc5e", "\ufe70", "\uff9e", "\uff9f")


def test_letters_that_fold_to_nothing_are_not_letters_of_a_search():
    for char in FOLD_TO_NOTHING:
        assert char.isalpha() and domain.search_family_name(char) == ""
        assert domain.search_letters(char * 2) == 0
        assert not domain.searchable(char) and not domain.searchable(f"{char} -")
    assert domain.search_letters("ß") == 2            # searched as "ss"
    assert domain.search_letters("jo ") == 2 and domain.searchable("O'Neil") and domain.searchable("7")


def test_folding_may_lengthen_a_name():
    assert domain.search_family_name("x" * 99 + "ß") == "x" * 99 + "ss"
    assert len(domain.search_family_name("\ufdfa")) == 18
    assert len(domain.search_name("ß" * 100, "\ufdfa" * 100)) > 1000


def written_by_an_older_pod(engine, patient_id: str, family_name: str | None = None) -> None:
    """What a records pod older than family_search does: registers without it, renames without touching it."""
    with engine.begin() as connection:
        if family_name is None:
            connection.execute(db.patients.update().where(db.patients.c.id == patient_id).values(family_search=None))
        else:
            connection.execute(db.patients.update().where(db.patients.c.id == patient_id).values(
                family_name=family_name, search_name=domain.search_name("Ana", family_name), updated_at=NOW))


def family_search_of(engine, patient_id: str) -> str | None:
    with engine.connect() as connection:
        return connection.execute(sa.select(db.patients.c.family_search).where(db.patients.c.id == patient_id)).scalar()


def job(engine, now=NOW) -> int:
    return patients.refold_family_names(UnitOfWork(engine, db.metadata, SERVICE, clock=lambda: now))


def test_the_job_folds_a_family_name_an_older_pod_left_unfolded_or_stale_and_nothing_else(engine, uow, patient):
    other = patients.register_patient(uow(roles=("front_desk",), action=audit.CREATE),
                                      {**ANA, "email": "other@example.org", "family_name": "Núñez"})
    written_by_an_older_pod(engine, patient["id"])
    written_by_an_older_pod(engine, other["id"], family_name="Straße")
    assert family_search_of(engine, patient["id"]) is None and family_search_of(engine, other["id"]) == "nunez"
    assert job(engine) == 2
    assert (family_search_of(engine, patient["id"]), family_search_of(engine, other["id"])) == ("reyes", "strasse")
    assert job(engine) == 0, "a second run finds nothing left to fold"


def test_a_correction_older_than_the_lookback_is_left_alone_but_a_missing_fold_never_is(engine, patient):
    written_by_an_older_pod(engine, patient["id"], family_name="Ruiz")
    written_by_an_older_pod(engine, patient["id"])
    assert job(engine, now=NOW + patients.REFOLD_LOOKBACK + timedelta(minutes=1)) == 1
    assert family_search_of(engine, patient["id"]) == "ruiz"


def test_a_fold_is_not_stored_once_the_family_name_it_was_made_from_has_changed(engine, patient):
    with engine.begin() as connection:
        assert not db.set_family_search(connection, patient["id"], "Someone Else", "someone else")
    assert family_search_of(engine, patient["id"]) == "reyes"
