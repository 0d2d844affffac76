"""clinic.db's engine on the real PostgreSQL: a pooled connection the server closed is replaced before
use; clinic.db.transaction never keeps a half-written change, and a refusal that wrote nothing leaves
the connection's prepared statements in place."""

from __future__ import annotations

import select

import pytest
import sqlalchemy as sa

from clinic.db import create_engine, transaction
from clinic.errors import Conflict

metadata = sa.MetaData()
desks = sa.Table("desks", metadata, sa.Column("id", sa.Integer(), primary_key=True), sa.Column("note", sa.String(50)))


@pytest.fixture
def engine(postgres):
    url = postgres.create_database("refusals")
    engine = create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(desks.insert(), [{"id": 1, "note": "front"}])
    yield engine
    engine.dispose()
    postgres.drop_database(url)


def backend(connection) -> int:
    return connection.execute(sa.select(sa.func.pg_backend_pid())).scalar_one()


def test_a_pooled_connection_the_server_closed_is_replaced_before_use(engine):
    with engine.connect() as connection:
        closed = backend(connection)
    with engine.connect() as connection:
        assert backend(connection) == closed  # the pool hands the same connection back
    # Another session ends that backend, as a restart, a failover or an idle timeout would.
    admin = create_engine(engine.url.render_as_string(hide_password=False))
    with admin.connect() as connection:
        assert connection.execute(sa.select(sa.func.pg_terminate_backend(closed, 5000))).scalar_one()
    admin.dispose()
    with engine.connect() as connection:
        assert backend(connection) != closed
        assert connection.execute(sa.text("SELECT 1")).scalar_one() == 1


def test_a_check_that_finds_every_pooled_connection_gone_still_gets_a_new_one(engine, monkeypatch):
    """The check firing on the pooled connection and again on its replacement would leave the pool
    with no connection to give (a 500): a connection made just now is trusted until its first statement."""
    with engine.connect() as connection:
        pooled = backend(connection)

    class AlwaysReadable:
        def register(self, *_args):
            pass

        def poll(self, _timeout):
            return [(0, select.POLLIN)]

    monkeypatch.setattr(select, "poll", AlwaysReadable)
    with engine.connect() as connection:
        assert backend(connection) != pooled
        assert connection.execute(sa.text("SELECT 1")).scalar_one() == 1


def notes(engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(desks.c.note).order_by(desks.c.id)).scalars())


def prepared_statements(connection) -> int:
    return connection.execute(sa.text("SELECT count(*) FROM pg_prepared_statements")).scalar_one()


def test_a_refusal_after_a_write_undoes_the_write(engine):
    with pytest.raises(Conflict):
        with transaction(engine) as connection:
            connection.execute(desks.update().values(note="changed"))
            connection.execute(desks.insert().values(id=2, note="added"))
            raise Conflict("refused after writing")
    assert notes(engine) == ["front"]


def test_any_other_error_undoes_the_work(engine):
    with pytest.raises(RuntimeError):
        with transaction(engine) as connection:
            connection.execute(desks.insert().values(id=2, note="added"))
            raise RuntimeError("a bug, not a refusal")
    assert notes(engine) == ["front"]


def test_work_that_ends_normally_is_committed(engine):
    with transaction(engine) as connection:
        connection.execute(desks.insert().values(id=2, note="added"))
    assert notes(engine) == ["front", "added"]


def test_a_refusal_that_only_read_and_locked_keeps_the_prepared_statements(engine):
    look = sa.select(desks.c.note).where(desks.c.id == sa.bindparam("id")).with_for_update()
    for _ in range(8):  # psycopg prepares a statement on its sixth run
        with engine.begin() as connection:
            connection.execute(look, {"id": 1})
    with pytest.raises(Conflict):
        with transaction(engine) as connection:
            assert prepared_statements(connection) >= 1
            connection.execute(look, {"id": 1})
            raise Conflict("the slot is taken")
    with engine.connect() as connection:
        assert prepared_statements(connection) >= 1
        # and the lock went with the transaction: another transaction takes it at once
        connection.execute(sa.text("SET lock_timeout = '1s'"))
        connection.execute(look, {"id": 1})
        connection.rollback()
    assert notes(engine) == ["front"]


def test_a_database_error_is_logged_with_where_it_failed_never_the_row_it_quotes(engine):
    """PostgreSQL's detail repeats the refused row; the services log the kind and SQLSTATE instead."""
    import logging

    from clinic.logs import OneLineFormatter

    name = " ".join(["Maria", "Silva"])  # built here so that no source line in the traceback holds it
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO desks (id, note) VALUES (NULL, :note)"), {"note": name})
    except sa.exc.IntegrityError as exc:
        assert name in str(exc.orig)  # "Failing row contains (null, Maria Silva)": what would have been logged
        record = logging.LogRecord("clinic", logging.ERROR, __file__, 1, "database error", (), (type(exc), exc, exc.__traceback__))
        logged = OneLineFormatter("%(message)s").format(record)
    assert name not in logged
    assert "SQLSTATE 23502" in logged and "test_database_engine.py" in logged
