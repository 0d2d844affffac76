"""The database deadline, as far as it can be seen without a server: how its errors read, and SQLite's
wait for the write lock (the frozen PostgreSQL is tests/integration/test_database_stall.py)."""

import sqlalchemy as sa

from clinic.db import DatabaseNotAnswering, create_engine, is_transient, is_unavailable, without_deadline


class _DriverError(Exception):
    def __init__(self, sqlstate):
        super().__init__("driver error")
        self.sqlstate = sqlstate


def wrapped(sqlstate):
    return sa.exc.OperationalError("SELECT 1", {}, _DriverError(sqlstate))


def test_a_wait_the_server_ended_for_taking_too_long_is_unavailable():
    assert is_unavailable(wrapped("57014"))  # statement_timeout
    assert is_unavailable(wrapped("55P03"))  # lock_timeout
    assert is_transient(wrapped("57014"))


def test_the_clients_own_deadline_reads_as_unavailable():
    assert is_unavailable(sa.exc.OperationalError("SELECT 1", {}, DatabaseNotAnswering("the database did not answer within 2s")))


def busy_timeout(connection) -> int:
    return connection.connection.dbapi_connection.execute("PRAGMA busy_timeout").fetchone()[0]


def test_sqlite_waits_for_the_write_lock_as_long_as_the_deadline(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'bounded.db'}", deadline_seconds=2.0)
    with engine.connect() as connection:
        assert busy_timeout(connection) == 2000
    engine.dispose()
    unbounded = create_engine(f"sqlite:///{tmp_path / 'unbounded.db'}", deadline_seconds=None)
    with unbounded.connect() as connection:
        assert busy_timeout(connection) == 15000
    unbounded.dispose()


def test_a_migration_on_sqlite_waits_longer_and_gives_the_pool_its_bound_back(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'migrated.db'}", deadline_seconds=2.0)
    with without_deadline(engine) as connection:
        assert busy_timeout(connection) == 15000
        pooled = connection.connection.dbapi_connection
    with engine.connect() as connection:
        assert connection.connection.dbapi_connection is pooled  # the same connection, back in the pool
        assert busy_timeout(connection) == 2000
    engine.dispose()
