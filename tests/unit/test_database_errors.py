"""Which database errors mean "try later" (503) and which are the statement's own fault (500)."""

import sqlalchemy as sa

from clinic.db import is_conflict_victim, is_transient, is_unavailable


class _DriverError(Exception):
    def __init__(self, sqlstate):
        super().__init__("driver error")
        self.sqlstate = sqlstate


def wrapped(kind, sqlstate):
    return kind("SELECT 1", {}, _DriverError(sqlstate))


def test_a_database_that_cannot_be_reached_is_unavailable():
    assert is_unavailable(wrapped(sa.exc.OperationalError, None))  # connection refused: no SQLSTATE
    assert is_unavailable(wrapped(sa.exc.OperationalError, "08006"))  # connection failure
    assert is_unavailable(wrapped(sa.exc.OperationalError, "57P01"))  # server shutting down
    assert is_unavailable(wrapped(sa.exc.OperationalError, "53300"))  # no connection slot free
    assert is_unavailable(sa.exc.TimeoutError("QueuePool limit reached"))


def test_a_deadlock_victim_is_transient_but_not_unavailable():
    deadlock = wrapped(sa.exc.OperationalError, "40P01")
    assert not is_unavailable(deadlock)
    assert is_conflict_victim(deadlock) and is_transient(deadlock)
    assert is_conflict_victim(wrapped(sa.exc.OperationalError, "40001"))


def test_a_refused_statement_is_neither():
    for error in (wrapped(sa.exc.IntegrityError, "23505"), wrapped(sa.exc.ProgrammingError, "42P01"),
                  wrapped(sa.exc.OperationalError, "53100"), ValueError("x")):
        assert not is_transient(error)
