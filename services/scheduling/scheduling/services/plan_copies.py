"""Who may be booked, and for how long: each patient's plan copy, kept from records' events."""

from __future__ import annotations

from clinic.unit_of_work import UnitOfWork
from scheduling.db import plan_copies
from scheduling.domain import PlanCopy


def keep_plan_copy(uow: UnitOfWork, copy: PlanCopy) -> bool:
    """Keep the copy unless the stored one is of the same or a later plan sequence (scheduling.domain.PlanCopy);
    True when it was written. One atomic statement: no clock compared, no lock taken."""
    with uow:
        return plan_copies.keep(uow.connection, copy, uow.now)
