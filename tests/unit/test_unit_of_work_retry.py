"""A unit of work whose transaction could not even begin can be entered again: the retry loops the
unit of work is built for (a new transaction per entry) must not find it stuck "already in a transaction"
after the database was away for a moment."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from clinic import audit, events, unit_of_work
from clinic.auth import Principal
from clinic.db import create_engine, messaging_tables
from clinic.unit_of_work import UnitOfWork

metadata = sa.MetaData()
outbox, inbox = messaging_tables(metadata)
audit_log = audit.audit_table(metadata)
PATIENT = "7d0f6d2e-8a3c-4d0e-9a55-2f3f5b7c1e10"


@pytest.fixture
def engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'uow.db'}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


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
