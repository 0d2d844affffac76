"""scheduling.db.booking_sql.overlaps means the same on PostgreSQL (ranges, for the GiST indexes) and on SQLite
(comparisons): a hold [starts, until) overlaps [start, end), and an empty hold overlaps nothing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from clinic.db import UtcDateTime, create_engine
from scheduling.db.booking_sql import overlaps

T = datetime(2031, 3, 4, 14, 0, tzinfo=timezone.utc)


def at(minutes: int) -> datetime:
    return T + timedelta(minutes=minutes)


# (hold starts, hold until, span start, span end, overlapping?)
CASES = [
    (0, 60, 30, 90, True),
    (0, 60, 60, 120, False),      # the span starts as the hold ends
    (60, 120, 0, 60, False),      # the span ends as the hold starts
    (0, 120, 30, 60, True),       # the span inside the hold
    (30, 60, 0, 120, True),       # the hold inside the span
    (30, 30, 0, 60, False),       # an empty hold: a session ended as it began
    (0, 0, 0, 60, False),
]


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'overlaps.db'}")
        yield engine
        engine.dispose()
        return
    postgres = request.getfixturevalue("postgres")
    url = postgres.create_database("overlaps")
    engine = create_engine(url)
    yield engine
    engine.dispose()
    postgres.drop_database(url)


@pytest.mark.parametrize("starts, until, start, end, expected", CASES)
def test_overlap_is_the_same_on_both_databases(engine, starts, until, start, end, expected):
    moments = [sa.literal(at(minutes), UtcDateTime()) for minutes in (starts, until, start, end)]
    with engine.connect() as connection:
        assert bool(connection.execute(sa.select(overlaps(*moments))).scalar_one()) is expected
