"""Each patient's plan copy: what scheduling knows of records' treatment plans (scheduling.domain.PlanCopy)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.db import keep_newest, row_of
from scheduling.db.tables import plan_copies
from scheduling.domain import PlanCopy

_COPIED = ("patient_id", "plan_id", "infusion_minutes", "version")


def get(connection: Connection, patient_id: str) -> PlanCopy | None:
    row = row_of(connection, sa.select(*(plan_copies.c[name] for name in _COPIED)).where(plan_copies.c.patient_id == patient_id))
    return PlanCopy(**row) if row else None


def from_row(row: dict | None) -> PlanCopy | None:
    """A plan copy from a row of plan_copies (as locks.plan_copy_row returns it)."""
    return PlanCopy(**{name: row[name] for name in _COPIED}) if row else None


def keep(connection: Connection, copy: PlanCopy, written_at) -> bool:
    """Store the copy unless the stored one has an equal or higher version, in one atomic statement
    (clinic.db.keep_newest): whatever order records' events arrive in, and whichever worker replica
    applies them, the copy ends at the highest plan sequence. True when it was written."""
    row = {"patient_id": copy.patient_id, "plan_id": copy.plan_id, "infusion_minutes": copy.infusion_minutes,
           "version": copy.version, "changed_at": written_at}
    return keep_newest(connection, plan_copies, row, key=("patient_id",))
