"""How every service talks to its own database: the engine, the one transaction idiom, what a
database error means (unavailable, a conflict's victim, a constraint refusing a write), copies kept
by version, and the outbox and inbox tables every service carries.

One module, over the usual length, because these are one contract with the database that the unit of
work, the consumer and the web error handler all rely on together: the engine's checks and deadlines,
the transaction's way of ending and the reading of its errors must agree (a deadline that runs out
must read as "unavailable", or a stalled database would answer 500 instead of 503). Migrations are in
clinic.migrations.

Each service owns its database. Its db.py builds a MetaData with `messaging_tables(metadata)` so the
outbox and inbox live beside its own tables and are written in the same transactions.
"""

from __future__ import annotations

import logging
import select
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import psycopg
import sqlalchemy as sa
from psycopg.errors import ConnectionTimeout
from psycopg.errors import _WaitTimeout as _PsycopgWaitTimeout
from psycopg.pq import TransactionStatus
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.types import TypeDecorator

from clinic.errors import ClinicError
from clinic.outages import Backoff, Outage

log = logging.getLogger(__name__)


class UtcDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every database (SQLite keeps no zone, so we restore it)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return str(uuid.uuid4())


def messaging_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """The outbox (events to publish) and the inbox (events already applied) of one service."""
    outbox = sa.Table(
        "outbox",
        metadata,
        # An increasing key keeps the order in which the service's changes happened.
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("published_at", UtcDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(500), nullable=True),
    )
    sa.Index("ix_outbox_unpublished", outbox.c.published_at, outbox.c.position)
    inbox = sa.Table(
        "inbox",
        metadata,
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
    )
    return outbox, inbox


# The share of the deadline the server may spend on one statement before cancelling it.
_SERVER_SHARE_OF_DEADLINE = 0.8


def create_engine(url: str, timeout_seconds: int = 2, deadline_seconds: float | None = 5.0) -> Engine:
    """An engine that fails fast when the database is away or stalled, so requests answer 503 instead
    of hanging and workers back off.

    `timeout_seconds` bounds making a connection and waiting for a free one in the pool.
    `deadline_seconds` bounds every wait on the database once connected (None: no bound, for
    migrations and tools). On PostgreSQL:
      - the server cancels a statement after 80 % of the deadline (statement_timeout; lock waits are
        part of the statement), leaving the connection usable;
      - TCP keepalives and tcp_user_timeout notice a network partition;
      - a server that holds the connection open and never answers (stopped, swapped out, a hung
        disk: its kernel still acknowledges packets, so neither of the above fires) is cut off by the
        client itself when a wait runs past the deadline (_BoundedConnection), and the connection is
        discarded;
      - once that has happened, new work is refused at once, without waiting, until a probe in the
        background reaches the database again (_Stall).
    On SQLite, the deadline bounds how long a transaction waits for the write lock (busy_timeout),
    15 s without one.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        busy_seconds = deadline_seconds or _SQLITE_BUSY_SECONDS
        engine = sa.create_engine(url, hide_parameters=True, connect_args={"timeout": busy_seconds, "check_same_thread": False})
        _sqlite_pragmas(engine, busy_seconds)
        return engine
    # Keepalives make the kernel notice a server that vanished without a word (a host crash, a
    # firewall forgetting the connection): the socket then reports an error at the next checkout.
    connect_args = {"connect_timeout": timeout_seconds, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                    "keepalives_count": 3}
    if deadline_seconds is not None:
        # Sent data left unacknowledged this long (a partition mid-statement) ends the connection.
        connect_args["tcp_user_timeout"] = int(deadline_seconds * 1000)
        # In the start-up packet, so it costs no round trip. Below the deadline: the server cancelling
        # first keeps the connection; the client's deadline is the backstop.
        statement_ms = int(deadline_seconds * 1000 * _SERVER_SHARE_OF_DEADLINE)
        options = sa.engine.make_url(url).query.get("options")
        connect_args["options"] = " ".join(filter(None, [options, f"-c statement_timeout={statement_ms}"]))
    engine = sa.create_engine(
        url,
        # Statement parameters are patient data: keep them out of error messages and logs.
        hide_parameters=True,
        pool_size=5,
        max_overflow=10,
        pool_timeout=timeout_seconds,
        connect_args=connect_args,
    )
    if deadline_seconds is not None:
        stall = _Stall(deadline_seconds)
        event.listen(engine, "do_connect", stall.connect)
        event.listen(engine, "before_cursor_execute", stall.refuse_new_work)
    event.listen(engine, "connect", _note_new)
    event.listen(engine, "checkout", _refuse_if_hung_up)
    return engine


class DatabaseNotAnswering(psycopg.OperationalError):
    """The database did not answer within the engine's deadline, or is known not to be answering.
    An OperationalError without SQLSTATE: is_unavailable() reads it as unavailable (503, back off)."""


class _BoundedConnection(psycopg.Connection):
    """psycopg's connection, with every wait on the server bounded by `deadline` seconds (None: none).

    psycopg runs every exchange with the server (a statement, COMMIT, ROLLBACK, the pool's reset, a
    fetch from a server-side cursor) as a generator driven by Connection.wait, which polls the
    socket (in C, psycopg_binary's wait_c) every 0.1 s and raises its internal _WaitTimeout once
    `timeout` has passed. Connection.wait is given that timeout here. When it runs out, the state of
    the exchange is unknown, so the connection is closed: SQLAlchemy then sees a closed connection,
    invalidates it (the pool discards it, never reuses it) and marks the error connection_invalidated.
    Making a connection is bounded apart (connect_timeout). tests/integration/test_database_stall.py
    proves this on a frozen server.
    """

    deadline: float | None = None
    stall: _Stall | None = None

    def wait(self, gen, *args, timeout: float | None = None, **kwargs):
        limit = self.deadline
        if limit is None or (timeout is not None and timeout <= limit):
            return super().wait(gen, *args, timeout=timeout, **kwargs)
        try:
            return super().wait(gen, *args, timeout=limit, **kwargs)
        except _PsycopgWaitTimeout:
            self.pgconn.finish()
            if self.stall is not None:
                self.stall.noticed()
            raise DatabaseNotAnswering(f"the database did not answer within {limit:g}s") from None


_FIRST_PROBE_SECONDS = 0.1


class _Stall:
    """Whether an engine's database has stopped answering, and the probe that sees it answer again.

    Without it, each request during a stall would wait out a whole deadline or connect timeout, and
    the requests queued behind them in the same threads would wait several: with 8 clients on 4
    threads, twice the bound. Once a wait has run out its deadline, or a connection attempt its
    timeout, new work is refused at once (a new connection, or the first statement of a
    transaction: one begun already is left to finish or run out its own deadline, since ending it
    would wait on the server too), while one background thread tries a new connection and SELECT 1
    with growing delays up to a second. The first answer ends the stall.

    A false alarm (one wait ran out on a server that is answering) costs a few milliseconds of
    refusals: the probe's first try ends it.
    """

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.since: float | None = None
        self._lock = threading.Lock()
        self._probe: threading.Thread | None = None
        self._connect_with: tuple[list, dict] | None = None
        self._outage = Outage(log, "database")

    def connect(self, _dialect, _record, cargs, cparams) -> _BoundedConnection:
        """The engine's do_connect: every connection is a _BoundedConnection with the deadline."""
        self._connect_with = (list(cargs), dict(cparams))
        self.refuse_if_stalled()
        try:
            connection = _BoundedConnection.connect(*cargs, **cparams)
        except ConnectionTimeout:
            self.noticed()
            raise
        connection.deadline, connection.stall = self.deadline, self
        return connection

    def refuse_new_work(self, _connection, cursor, *_args) -> None:
        """before_cursor_execute: refuse the first statement of a transaction while stalled."""
        if self.since is not None and cursor.connection.info.transaction_status == TransactionStatus.IDLE:
            self.refuse_if_stalled()

    def refuse_if_stalled(self) -> None:
        if self.since is None:
            return
        self._ensure_probe()  # after a fork, or should the probe have died
        if self.since is not None:
            raise DatabaseNotAnswering("the database is not answering (refused without waiting)")

    def noticed(self) -> None:
        with self._lock:
            if self.since is None:
                self.since = time.monotonic()
                self._outage.failed(DatabaseNotAnswering(), _FIRST_PROBE_SECONDS)
        self._ensure_probe()

    def _ensure_probe(self) -> None:
        with self._lock:
            if self.since is not None and (self._probe is None or not self._probe.is_alive()):
                self._probe = threading.Thread(target=self._run_probe, name="clinic-database-probe", daemon=True)
                self._probe.start()

    def _run_probe(self) -> None:
        backoff = Backoff(cap_seconds=1.0, first_seconds=_FIRST_PROBE_SECONDS)
        while True:
            try:
                if self._connect_with is not None:
                    cargs, cparams = self._connect_with
                    connection = _BoundedConnection.connect(*cargs, **cparams)
                    try:
                        connection.deadline = self.deadline
                        connection.execute("SELECT 1")
                    finally:
                        connection.close()
                with self._lock:
                    self.since = None
                self._outage.recovered()
                return
            except Exception as exc:  # noqa: BLE001 - whatever the reason, the database is not answering yet
                delay = backoff.next()
                self._outage.failed(exc, delay)
                time.sleep(delay)


_NEW = "clinic.new"


def _note_new(_dbapi_connection, record) -> None:
    record.info[_NEW] = True


def _refuse_if_hung_up(dbapi_connection, record, _proxy) -> None:
    """A pooled connection the server has closed (a restart, a server-side idle timeout) is replaced
    before use, so the request after a database restart does not fail.

    The check costs no round trip, unlike a ping: an idle connection has nothing to read unless the
    server has hung up (it sends a last message, then end of file), so a readable socket means
    gone. A peer that vanished without a word is seen once TCP keepalives have given up on it (within
    half a minute); a request in that time gets a 503 when its deadline runs out. The services never
    LISTEN, so no notification can make a live connection look gone; at worst another unexpected
    message costs a reconnect.

    A connection made just now is not checked: the pool replaces a refused connection once, and a
    new one refused too would end the request in a bare "connection is closed" (a 500). A new
    connection the server ends at once fails at its first statement instead, as unavailable (503).
    """
    if record.info.pop(_NEW, False):
        return
    try:
        poller = select.poll()
        poller.register(dbapi_connection.fileno(), select.POLLIN)
        hung_up = bool(poller.poll(0))
    except Exception:  # noqa: BLE001 - a connection that cannot even be asked is gone too
        hung_up = True
    if hung_up:
        raise sa.exc.DisconnectionError("the database closed this connection")


# --- transactions that may be refused -------------------------------------------------------

_WROTE = "clinic.wrote"


def _note_writes(connection, cursor, statement, _parameters, _context, _executemany) -> None:
    # Any statement but a SELECT counts as a write, unless it changed no row: an INSERT ... SELECT
    # ... WHERE NOT EXISTS that found the slot taken wrote nothing.
    if statement.lstrip()[:6].upper() != "SELECT" and cursor.rowcount != 0:
        connection.info[_WROTE] = True


@contextmanager
def transaction(engine: Engine, refusals: tuple[type[BaseException], ...] = (ClinicError,)) -> Iterator[Connection]:
    """Like engine.begin(), except when one of `refusals` ends a PostgreSQL transaction that has
    only read and locked so far: then it ends with COMMIT instead of ROLLBACK, and the refusal goes on.

    Both leave the database as it was and release the locks. The difference is in psycopg, which
    forgets every prepared statement of the connection on ROLLBACK (in case it undid the DDL they
    depend on). Where refusals are routine, a 409 for a slot just taken, rolling back would make
    PostgreSQL plan every statement afresh on every request. Anything written (any statement but a
    SELECT that changed a row, or whose count is unknown) and any other error still roll back.

    It relies on SELECTs having no lasting effect beyond their locks: one calling set_config(...,
    false), nextval() or pg_notify() before a refusal would keep that effect. The services' SELECTs
    read and lock only.
    """
    if not event.contains(engine, "after_cursor_execute", _note_writes):
        event.listen(engine, "after_cursor_execute", _note_writes)  # once per engine, whoever made it
    with engine.connect() as connection:
        with connection.begin() as work:
            connection.info[_WROTE] = False
            try:
                yield connection
            except refusals:
                if is_postgresql(connection) and not connection.info[_WROTE]:
                    work.commit()
                raise


# How long a SQLite transaction waits for the write lock when the engine has no deadline.
_SQLITE_BUSY_SECONDS = 15.0


@contextmanager
def without_deadline(engine: Engine) -> Iterator[Connection]:
    """A connection of `engine` on which nothing is bounded by its deadline: no client-side deadline,
    no statement_timeout, and on SQLite a wait for the write lock of at least 15 s. For migrations,
    which may legitimately run for minutes (an index built on a large table).

    The connection is begun by the caller (connection.begin()). Afterwards a PostgreSQL connection is
    discarded rather than returned to the pool, so no request ever gets a connection without its
    bounds (whatever state a failed migration left it in); SQLite's wait is set back instead (a
    discarded in-memory database would be lost).
    """
    with engine.connect() as connection:
        dbapi_connection = connection.connection.dbapi_connection
        if is_postgresql(connection):
            if isinstance(dbapi_connection, _BoundedConnection):
                dbapi_connection.deadline = None
            # On the driver's connection, outside SQLAlchemy's transaction (which the caller begins).
            dbapi_connection.execute("SET statement_timeout = 0")
            dbapi_connection.commit()
            try:
                yield connection
            finally:
                connection.invalidate()
        else:
            # Straight on sqlite3 (in autocommit), so that SQLAlchemy's BEGIN IMMEDIATE waits the longer time.
            bounded = dbapi_connection.execute("PRAGMA busy_timeout").fetchone()[0]
            dbapi_connection.execute(f"PRAGMA busy_timeout={max(bounded, int(_SQLITE_BUSY_SECONDS * 1000))}")
            try:
                yield connection
            finally:
                dbapi_connection.execute(f"PRAGMA busy_timeout={bounded}")


def _sqlite_pragmas(engine: Engine, busy_seconds: float) -> None:
    # WAL lets the web process read while the worker writes; BEGIN IMMEDIATE takes the write lock
    # at the start of every transaction, which serialises writers (SQLite's only safe way to make
    # check-then-insert rules hold) and avoids deadlocks between a reader upgrading to a writer.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_seconds * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def is_postgresql(connection_or_engine) -> bool:
    return connection_or_engine.dialect.name == "postgresql"


# SQLSTATEs that mean the server or the connection went away (class 08, the server shutting down,
# or no connection slot free), as opposed to a statement the server refused.
_SERVER_GONE = ("57P01", "57P02", "57P03", "53300")
# SQLSTATEs of a wait the server ended for taking too long: statement_timeout (query_canceled, also
# an operator's pg_cancel_backend) and lock_timeout (lock_not_available).
_TOO_SLOW = ("57014", "55P03")
# SQLSTATEs where the server chose this transaction as the victim of a conflict (serialization
# failure, deadlock): the whole transaction may simply be run again.
_RUN_AGAIN = ("40001", "40P01")


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", None), "sqlstate", None)


_UNIQUE_VIOLATION, _EXCLUSION_VIOLATION = "23505", "23P01"


def violated_constraint(exc: BaseException) -> str | None:
    """The name of the unique or exclusion constraint that refused a write, on PostgreSQL; "" when
    SQLite refused it for a unique key (it names columns, not constraints); None for anything else.
    For turning a refused write into a 409 that names what is in the way."""
    if not isinstance(exc, sa.exc.IntegrityError):
        return None
    if _sqlstate(exc) in (_UNIQUE_VIOLATION, _EXCLUSION_VIOLATION):
        return getattr(getattr(exc.orig, "diag", None), "constraint_name", None) or ""
    if "UNIQUE constraint failed" in str(exc.orig):
        return ""
    return None


def is_unavailable(exc: BaseException) -> bool:
    """True when the error says the database is away, stalled, too slow to answer within the deadline
    or out of connections (try later), not that the statement is wrong."""
    if isinstance(exc, sa.exc.TimeoutError):
        return True  # the connection pool stayed exhausted past its timeout
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        sqlstate = _sqlstate(exc)
        # No SQLSTATE: the connection could not be made at all (or SQLite stayed locked).
        return sqlstate is None or sqlstate.startswith("08") or sqlstate in _SERVER_GONE or sqlstate in _TOO_SLOW
    return False


def is_conflict_victim(exc: BaseException) -> bool:
    """True when the database aborted the transaction to resolve a conflict with another one."""
    return isinstance(exc, DBAPIError) and _sqlstate(exc) in _RUN_AGAIN


def is_transient(exc: BaseException) -> bool:
    """Running the same transaction again later may well succeed."""
    return is_unavailable(exc) or is_conflict_victim(exc)


def keep_newest(connection, table: sa.Table, row: dict, key: tuple[str, ...], version_column: str = "version") -> bool:
    """Insert the row, or replace the stored one with the same key if this one's version is higher,
    in one atomic statement; True when it was written.

    For copies kept from events (a patient's contact details, the plan in force): the producer stamps
    a version in the same transaction as the change, so whatever order the events arrive in, and
    whichever worker replica applies them, the copy ends at the highest version. No clock is
    compared and no lock is taken: INSERT ... ON CONFLICT DO UPDATE ... WHERE (PostgreSQL, SQLite).

    Version 0 is "from before versions existed" (events still queued when the producer was upgraded):
    such an event replaces a copy at 0, in the order it arrives, as copies were kept before; it never
    replaces a versioned copy.
    """
    statement = newest_upsert(table, tuple(row), key, connection.dialect.name, version_column)
    return connection.execute(statement, row).rowcount == 1


_newest_upserts: dict[tuple, sa.Insert] = {}


def newest_upsert(table: sa.Table, columns: tuple[str, ...], key: tuple[str, ...], dialect: str,
                  version_column: str = "version") -> sa.Insert:
    """keep_newest's statement for rows of these columns, to be executed with a row as its parameters;
    a caller may add a RETURNING clause to learn more in the same round trip (it returns a row only
    when the row was written).

    Built once per table, columns, key and dialect: building a statement costs far more than running
    one (SQLAlchemy then compiles it once, too), and a consumer keeps thousands of copies a second."""
    cache_key = (table, frozenset(columns), key, dialect, version_column)
    statement = _newest_upserts.get(cache_key)
    if statement is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - the clinic runs on these two
            raise NotImplementedError(f"keep_newest on {dialect}")
        # No values(): the row comes as the execution's parameters, so its columns are the INSERT's.
        statement = insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c[name] for name in key],
            set_={name: statement.excluded[name] for name in sorted(columns) if name not in key},
            where=sa.or_(statement.excluded[version_column] > table.c[version_column],
                         sa.and_(statement.excluded[version_column] == 0, table.c[version_column] == 0)),
        # SQLAlchemy keeps an INSERT's rowcount only when asked (it would read -1 on PostgreSQL).
        ).execution_options(preserve_rowcount=True)
        _newest_upserts[cache_key] = statement
    return statement


def row_of(connection, query) -> dict | None:
    """The first row of a query as a dict, or None."""
    row = connection.execute(query).mappings().first()
    return dict(row) if row else None


def rows_of(connection, query) -> list[dict]:
    """Every row of a query as a dict."""
    return [dict(row) for row in connection.execute(query).mappings()]


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for reads only, ended with COMMIT rather than ROLLBACK: psycopg forgets the
    connection's prepared statements on ROLLBACK, and the next booking on it would be planned again.
    (An error raised inside still ends it with ROLLBACK, as any transaction.)"""
    with engine.connect() as connection:
        with connection.begin():
            yield connection


def ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
