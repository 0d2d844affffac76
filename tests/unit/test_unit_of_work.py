"""The unit of work every service's use cases run in: the change, its events and its audit rows commit
together or not at all (SQLite in a temporary file)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from clinic import audit, events, unit_of_work
from clinic.auth import Principal
from clinic.db import create_engine, messaging_tables
from clinic.errors import Conflict
from clinic.unit_of_work import UnitOfWork

metadata = sa.MetaData()
outbox, inbox = messaging_tables(metadata)
audit_log = audit.audit_table(metadata)
things = sa.Table("things", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(20)))
PATIENT = "7d0f6d2e-8a3c-4d0e-9a55-2f3f5b7c1e10"


@pytest.fixture
def engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'uow.db'}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def access() -> audit.Access:
    return audit.Access(Principal("nurse-7", ("nurse",)), audit.UPDATE, "thing", None)


def counts(engine) -> tuple[int, int, int]:
    with engine.connect() as connection:
        return tuple(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                     for table in (things, outbox, audit_log))


def add_thing(uow: UnitOfWork, name: str, fail_with: Exception | None = None) -> None:
    with uow:
        uow.connection.execute(things.insert().values(name=name))
        uow.add_event(events.PATIENT_REGISTERED, {"patient_id": PATIENT})
        uow.audit.concerning(patient_id=PATIENT, resource_id="1")
        if fail_with is not None:
            raise fail_with


def test_the_change_its_event_and_its_audit_row_commit_together(engine):
    entry = access()
    add_thing(UnitOfWork(engine, metadata, "records", access=entry), "first")
    assert counts(engine) == (1, 1, 1)
    assert entry.recorded
    with engine.connect() as connection:
        row = connection.execute(sa.select(audit_log)).mappings().one()
    assert (row["subject"], row["outcome"], row["patient_id"], row["resource_id"]) == ("nurse-7", "allowed", PATIENT, "1")


@pytest.mark.parametrize("failure", [Conflict("taken"), RuntimeError("bug")])
def test_a_refusal_or_an_error_leaves_no_change_no_event_and_no_audit_row(engine, failure):
    entry = access()
    with pytest.raises(type(failure)):
        add_thing(UnitOfWork(engine, metadata, "records", access=entry), "refused", fail_with=failure)
    assert counts(engine) == (0, 0, 0)
    assert not entry.recorded  # so the view records the refusal on its own


def test_an_event_that_breaks_its_schema_undoes_the_change(engine):
    uow = UnitOfWork(engine, metadata, "records", access=access())
    with pytest.raises(events.InvalidEvent), uow:
        uow.connection.execute(things.insert().values(name="half"))
        uow.add_event(events.PATIENT_REGISTERED, {"patient_id": "not-a-uuid"})
    assert counts(engine) == (0, 0, 0)


def test_a_unit_of_work_can_be_entered_again_for_a_retry_each_time_a_new_transaction(engine):
    uow = UnitOfWork(engine, metadata, "records")
    with pytest.raises(Conflict):
        add_thing(uow, "lost the race", fail_with=Conflict("taken"))
    add_thing(uow, "second attempt")
    assert counts(engine) == (1, 1, 0)  # the worker's work: nobody to audit
    assert uow.connection is None


def test_its_clock_is_read_once_per_transaction(engine):
    ticks = iter(range(100))
    uow = UnitOfWork(engine, metadata, "records", clock=lambda: next(ticks))
    seen = []
    for _ in range(2):
        with uow:
            seen.append((uow.now, uow.now))
    assert seen == [(0, 0), (1, 1)]


def test_a_joined_unit_of_work_leaves_the_transaction_to_its_owner(engine):
    with engine.connect() as connection:
        with connection.begin() as owner:
            uow = UnitOfWork.joining(connection, metadata, "records", now=None)
            with uow:
                uow.connection.execute(things.insert().values(name="joined"))
            assert connection.in_transaction()
            owner.rollback()
    assert counts(engine) == (0, 0, 0)


def test_an_audited_unit_of_work_without_an_audit_table_is_refused_before_anything_is_written(engine):
    unaudited = sa.MetaData()
    messaging_tables(unaudited)
    with pytest.raises(RuntimeError, match="audit_log"):
        UnitOfWork(engine, unaudited, "records", access=access())
    assert counts(engine) == (0, 0, 0)


def test_a_transaction_that_could_not_begin_leaves_the_unit_of_work_free_for_a_retry(engine, monkeypatch):
    real, failures = unit_of_work.transaction, [sa.exc.OperationalError("BEGIN", {}, Exception("the database is away"))]

    @contextmanager
    def away_once(engine, refusals):
        if failures:
            raise failures.pop()
        with real(engine, refusals) as connection:
            yield connection

    monkeypatch.setattr(unit_of_work, "transaction", away_once)
    entry = audit.Access(Principal("nurse-7", ("nurse",)), audit.CREATE, "thing", None, [PATIENT])
    uow = UnitOfWork(engine, metadata, "records", access=entry)
    with pytest.raises(sa.exc.OperationalError), uow:
        pass
    with uow:
        uow.add_event(events.PATIENT_REGISTERED, {"patient_id": PATIENT})
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one() == 1
        assert connection.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one() == 1
    assert entry.recorded and uow.connection is None
