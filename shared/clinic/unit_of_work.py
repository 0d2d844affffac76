"""The unit of work: one database transaction, with what a use case may touch inside it.

Every write use case of every service is a function that takes a UnitOfWork and a command:

    def activate_plan(uow: UnitOfWork, plan_id: str, by: str) -> dict:
        with uow:
            ...uow.connection...          # reads and writes, in one transaction
            uow.add_event(type, payload)  # the outbox row, in the same transaction
            uow.audit.concerning(...)     # who read or changed which patient's data
            return ...

Leaving the `with` block normally commits, together with the audit rows of the request that
asked for it; an exception rolls everything back (see clinic.db.transaction for the one
exception, refusals after reads only). A UnitOfWork can be entered again for a retry: each entry
is a new transaction. The views build one per request (clinic.web.unit_of_work), the consumer
one per event (clinic.inbox), the unit tests one over a temporary SQLite file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from clinic import audit as audit_log
from clinic.db import transaction, utcnow
from clinic.errors import ClinicError
from clinic.outbox import outbox_row


class UnitOfWork:
    """One transaction of one service, with its outbox, its PHI audit and its clock.

    `metadata` is the service's (clinic.db.messaging_tables and clinic.audit.audit_table put the
    outbox and the audit log in it); `access` is the request's audit entry, None for the worker.
    """

    def __init__(self, engine: Engine, metadata: sa.MetaData, producer: str, *, clock: Callable[[], datetime] = utcnow,
                 access: audit_log.Access | None = None, refusals: tuple[type[BaseException], ...] = (ClinicError,)):
        self.engine = engine
        self.producer = producer
        self.clock = clock
        self.access = access
        self.refusals = refusals
        self._outbox = metadata.tables.get("outbox")
        self._audit_table = metadata.tables.get("audit_log")
        if access is not None and self._audit_table is None:
            # Found now, before anything is written: otherwise the change would commit unaudited and
            # the request then fail, and a client's retry would make it twice.
            raise RuntimeError(f"{producer}'s metadata has no audit_log table (clinic.audit.audit_table)")
        self._transaction = None
        self._audit_written_with_change = False
        self.connection: Connection | None = None
        self.now: datetime | None = None

    @classmethod
    def joining(cls, connection: Connection, metadata: sa.MetaData, producer: str, *, now: datetime,
                clock: Callable[[], datetime] = utcnow) -> UnitOfWork:
        """A unit of work inside a transaction someone else opened and will end (the consumer's,
        which records the event in the inbox in the same transaction)."""
        uow = cls(connection.engine, metadata, producer, clock=clock)
        uow.connection, uow.now = connection, now
        uow._transaction = _JOINED
        return uow

    @property
    def audit(self) -> audit_log.Access:
        """The request's audit entry; a use case names the patients it touched here."""
        return self.access if self.access is not None else audit_log.NOBODY

    def __enter__(self) -> UnitOfWork:
        if self._transaction is _JOINED:
            return self
        if self._transaction is not None:
            raise RuntimeError("this unit of work is already in a transaction")
        work = transaction(self.engine, self.refusals)
        # Kept only once it has begun: a database that could not be reached leaves the unit of work
        # free to be entered again (a retry), not stuck "already in a transaction".
        self.connection = work.__enter__()
        self._transaction = work
        self.now = self.clock()
        self._audit_written_with_change = False
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if self._transaction is _JOINED:
            return False
        work, self._transaction = self._transaction, None
        audited = exc_type is None and self.access is not None  # an access implies the table (__init__)
        try:
            if audited and not self._audit_written_with_change:
                try:
                    audit_log.write(self.connection, self._audit_table, self.access.rows(audit_log.ALLOWED))
                except BaseException:
                    work.__exit__(*sys.exc_info())  # no change without its audit row
                    raise
            work.__exit__(exc_type, exc, traceback)
        finally:
            self.connection = None
        if audited:
            self.access.recorded = True  # only once the rows have committed with the change
        return False

    def add_event(self, event_type: str, data: dict, version: int = 1) -> None:
        """Write an event in this transaction; it is published once the transaction has committed."""
        self.connection.execute(self._outbox_table().insert(), self.event_row(event_type, data, version))

    def event_row(self, event_type: str, data: dict, version: int = 1) -> dict:
        """The outbox row of an event, for a statement that writes it together with the change itself."""
        return outbox_row(self.producer, event_type, data, version)

    def audit_rows(self) -> list[dict]:
        """The request's audit rows as they stand, for a statement that writes them together with the
        change (as event_row is for an event): the unit of work then writes none of its own at commit.
        [] when nothing is audited (the worker). Call it after the attempt's last audit.concerning()."""
        if self.access is None:
            return []
        self._audit_written_with_change = True
        return self.access.rows(audit_log.ALLOWED)

    def _outbox_table(self) -> sa.Table:
        if self._outbox is None:
            raise RuntimeError("this service's metadata has no outbox table")
        return self._outbox


_JOINED = object()
