"""A stalled PostgreSQL gives 503 database_unavailable within the deadline, never a hang.

The server is frozen (every process of the cluster stopped with SIGSTOP, or its container paused:
clinic.testing.servers.Database.frozen). Its kernel still accepts connections and acknowledges every
packet, so neither TCP keepalives nor the server's own statement_timeout end a wait: only the
client's deadline does (clinic.db.create_engine). Without it, each of these tests would wait until
the thaw, and fail on its time limit.

Also here: the server-side bounds (statement_timeout, lock waits), which leave the connection usable,
and migrations, which are exempt from all of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import requests
import sqlalchemy as sa

from clinic import events
from clinic.auth import issue_token
from clinic.config import load_settings
from clinic.db import create_engine, is_unavailable
from clinic.limits import LOAD_TEST_LIMITS_ENV
from clinic.localservers import free_port, stop_process_group, wait_for_port
from clinic.migrations import migrate
from clinic.testing import eventually
from clinic.testing.concurrency import publishing
from tests.integration.conftest import queue_depth
from tests.support import probe

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEADLINE = 1.0  # the engines' deadline in the engine-level tests


def timed(call, limit: float):
    """(what `call` returned or raised, the seconds it took). Fails when it has not returned after
    `limit` seconds; it is then left to end in its thread once the server is thawed."""
    executor = ThreadPoolExecutor(max_workers=1)
    started = time.monotonic()
    future = executor.submit(call)
    executor.shutdown(wait=False)
    try:
        outcome = future.result(timeout=limit)
    except FuturesTimeout:
        raise AssertionError(f"still waiting on the database after {limit}s") from None
    except Exception as exc:  # noqa: BLE001 - the error is the outcome under test
        outcome = exc
    return outcome, time.monotonic() - started


def select_one(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT 1")).scalar_one()


def backend(connection) -> int:
    return connection.execute(sa.select(sa.func.pg_backend_pid())).scalar_one()


def assert_unavailable(outcome) -> None:
    assert isinstance(outcome, sa.exc.DBAPIError), f"expected a database error, got {outcome!r}"
    assert is_unavailable(outcome), f"{type(outcome.orig).__name__} would not answer 503: {outcome}"


@pytest.fixture
def database(postgres):
    url = postgres.create_database("stall")
    yield url
    postgres.drop_database(url)


def test_a_statement_on_a_frozen_server_ends_at_the_deadline_and_its_connection_is_discarded(postgres, database):
    engine = create_engine(database, deadline_seconds=DEADLINE)
    try:
        with engine.connect() as connection:
            cut = backend(connection)  # back in the pool, to be handed out during the freeze
        with postgres.frozen():
            outcome, seconds = timed(lambda: select_one(engine), limit=DEADLINE + 2)
            assert_unavailable(outcome)
            assert outcome.connection_invalidated, "the pool would keep a connection in an unknown state"
            assert DEADLINE * 0.9 <= seconds <= DEADLINE + 0.5, f"answered after {seconds:.2f}s"
            # The stall is known now: more work is refused at once instead of waiting out a deadline each.
            again, seconds = timed(lambda: select_one(engine), limit=DEADLINE + 2)
            assert_unavailable(again)
            assert seconds < 0.5, f"refused only after {seconds:.2f}s"
        fresh = eventually(lambda: _backend_when_answering(engine), timeout=15, message="the database answering again")
        assert fresh != cut, "the connection cut off at the deadline was handed out again"
        # and the server let go of it once it ran again (the client had closed it)
        eventually(lambda: cut not in _backends(database), timeout=10, message="the cut connection's backend to end")
    finally:
        engine.dispose()


def when_answering(call):
    """What call() returns, or None while the database is still unavailable (just after a thaw)."""
    try:
        return call()
    except sa.exc.DBAPIError as exc:
        if is_unavailable(exc):
            return None
        raise


def _backend_when_answering(engine) -> int | None:
    def read():
        with engine.connect() as connection:
            return backend(connection)

    return when_answering(read)


def _backends(url: str) -> set[int]:
    with psycopg.connect(url, autocommit=True) as connection:
        return {row[0] for row in connection.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")}


def test_commit_and_the_pools_rollback_are_bounded_too(postgres, database):
    engine = create_engine(database, deadline_seconds=DEADLINE)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE desks (id integer)"))
        committing, returning = engine.connect(), engine.connect()
        committing.execute(sa.text("INSERT INTO desks VALUES (1)"))
        returning.execute(sa.text("SELECT count(*) FROM desks")).scalar_one()  # a transaction open on it
        with postgres.frozen():
            outcome, seconds = timed(committing.commit, limit=DEADLINE + 2)
            assert_unavailable(outcome)
            assert seconds <= DEADLINE + 0.5, f"COMMIT ended after {seconds:.2f}s"
            # Returning a connection to the pool rolls its transaction back: that wait is bounded too,
            # and the connection it could not reset is discarded.
            _, seconds = timed(returning.close, limit=DEADLINE + 2)
            assert seconds <= DEADLINE + 0.5, f"the pool's ROLLBACK ended after {seconds:.2f}s"
            committing.close()
        assert eventually(lambda: _backend_when_answering(engine), timeout=15, message="the database answering again")
    finally:
        engine.dispose()


def test_connecting_to_a_frozen_server_ends_at_the_connect_timeout(postgres, database):
    engine = create_engine(database, timeout_seconds=2, deadline_seconds=DEADLINE)
    try:
        with postgres.frozen():
            outcome, seconds = timed(lambda: select_one(engine), limit=2 + 2)
            assert_unavailable(outcome)
            assert seconds <= 2 + 0.5, f"connecting failed after {seconds:.2f}s"
        assert eventually(lambda: _backend_when_answering(engine), timeout=15, message="the database answering again")
    finally:
        engine.dispose()


def test_the_server_cancels_a_slow_statement_or_lock_wait_first_and_the_connection_stays(database):
    engine = create_engine(database, deadline_seconds=DEADLINE)
    try:
        with engine.connect() as connection:
            kept = backend(connection)
            connection.commit()
            outcome, seconds = timed(lambda: connection.execute(sa.text("SELECT pg_sleep(30)")), limit=DEADLINE + 2)
            assert_unavailable(outcome)
            assert outcome.orig.sqlstate == "57014", outcome  # statement_timeout, at 80 % of the deadline
            assert not outcome.connection_invalidated and seconds < DEADLINE
            connection.rollback()
            assert backend(connection) == kept

            connection.execute(sa.text("CREATE TABLE rooms (id integer)"))
            connection.commit()
            connection.execute(sa.text("LOCK TABLE rooms IN ACCESS EXCLUSIVE MODE"))
            with engine.connect() as waiting:
                outcome, seconds = timed(lambda: waiting.execute(sa.text("SELECT count(*) FROM rooms")), limit=DEADLINE + 2)
            assert_unavailable(outcome)
            assert seconds < DEADLINE, f"the lock wait ended after {seconds:.2f}s"
            connection.rollback()
    finally:
        engine.dispose()


def test_migrations_are_exempt_from_the_deadline_and_leave_the_pool_bounded(database, tmp_path):
    migrations = tmp_path / "migrations"
    (migrations / "versions").mkdir(parents=True)
    (migrations / "env.py").write_text("import sqlalchemy as sa\nfrom clinic.migrations import run_migrations\n\n"
                                       "run_migrations(sa.MetaData())\n")
    # Longer than both the server's statement timeout and the client's deadline.
    (migrations / "versions" / "0001_slow.py").write_text(
        'from alembic import op\n\nrevision = "0001"\ndown_revision = None\n\n\n'
        f'def upgrade():\n    op.execute("SELECT pg_sleep({DEADLINE * 1.5})")\n'
        '    op.execute("CREATE TABLE migrated (id integer)")\n')
    engine = create_engine(database, deadline_seconds=DEADLINE)
    try:
        migrate(engine, migrations)
        connections = [engine.connect() for _ in range(3)]  # every pooled one, and a new one
        try:
            for connection in connections:
                assert connection.execute(sa.text("SHOW statement_timeout")).scalar_one() == f"{int(DEADLINE * 800)}ms"
            assert connections[0].execute(sa.text("SELECT count(*) FROM migrated")).scalar_one() == 0
        finally:
            for connection in connections:
                connection.close()
    finally:
        engine.dispose()


# --- the web under gunicorn, as deployed ------------------------------------------------------

WEB_DEADLINE = 2.0  # CLINIC_DATABASE_DEADLINE_SECONDS for the web under test
SLACK = 2.0         # what an answer may take beyond the deadline
CLIENTS = 8


@dataclass
class Web:
    base: str
    ops: str
    log: Path
    headers: dict


@pytest.fixture
def records_web(postgres, broker, tmp_path):
    """records under gunicorn (clinic.gunicorn_conf, 1 worker x 4 threads) on a migrated PostgreSQL
    database, with its master's ops port."""
    import records.db

    url = postgres.create_database("records")
    migrate(url, records.db.MIGRATIONS)
    port, ops_port = free_port(), free_port()
    env = {**os.environ, "DATABASE_URL": url, "RABBITMQ_URL": broker.url, "CLINIC_DATABASE_DEADLINE_SECONDS": str(WEB_DEADLINE),
           "CLINIC_METRICS_PORT": str(ops_port), "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
           # One staff member searching from several threads, ten times a second each: far past a desk's
           # allowance, which is not what this test is about.
           **LOAD_TEST_LIMITS_ENV}
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as output:
        process = subprocess.Popen([str(BIN / "gunicorn"), "-c", "python:clinic.gunicorn_conf", "--bind", f"127.0.0.1:{port}",
                                    "--workers", "1", "--threads", "4", "records.app:create_app()"],
                                   env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(port, 30, process, f"gunicorn (log: {log})")
            token = issue_token(load_settings("records", env={}), "desk-1", ["front_desk"])
            yield Web(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops_port}", log, {"Authorization": f"Bearer {token}"})
        finally:
            stop_process_group(process)
            postgres.drop_database(url)


@dataclass
class Answer:
    sent: float
    seconds: float
    status: int | None  # None: no answer (refused, or the client's own time limit)
    code: str | None = None


@dataclass
class Caller:
    """Calls one URL again and again from a thread of its own, recording every answer."""

    url: str
    headers: dict = field(default_factory=dict)
    pause: float = 0.1
    limit: float = 30.0
    answers: list[Answer] = field(default_factory=list)

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self._run, args=(stop,), daemon=True)
        thread.start()
        return thread

    def _run(self, stop: threading.Event) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                self.answers.append(call(session, self.url, self.headers, self.limit))
                stop.wait(self.pause)

    def since(self, moment: float) -> list[Answer]:
        return [answer for answer in list(self.answers) if answer.sent >= moment]


def call(session, url: str, headers: dict, limit: float) -> Answer:
    sent = time.monotonic()
    try:
        response = session.get(url, headers=headers, timeout=limit)
    except requests.RequestException:
        return Answer(sent, time.monotonic() - sent, None)
    code = response.json().get("error", {}).get("code") if response.status_code >= 400 else None
    return Answer(sent, time.monotonic() - sent, response.status_code, code)


def test_a_frozen_database_gives_503s_within_the_deadline_and_the_web_stays_alive(postgres, records_web):
    web = records_web
    route = f"{web.base}/patients?family_name=silva"
    clients = [Caller(route, web.headers) for _ in range(CLIENTS)]
    readiness = Caller(f"{web.base}/readyz", pause=0.5)
    liveness = Caller(f"{web.ops}/healthz", pause=0.25, limit=1.0)
    stop_clients, stop_probes = threading.Event(), threading.Event()
    threads = [client.start(stop_clients) for client in clients]
    try:
        # Every client answered before the freeze: the pool holds connections to be caught by it.
        eventually(lambda: all(any(a.status == 200 for a in client.answers) for client in clients), timeout=30,
                   message="every client answered 200 before the freeze")
        with postgres.frozen():
            frozen_at = time.monotonic()
            probes = [readiness.start(stop_probes), liveness.start(stop_probes)]
            eventually(lambda: all(len(client.since(frozen_at)) >= 3 for client in clients) and len(readiness.since(frozen_at)) >= 3
                       and len(liveness.since(frozen_at)) >= 40, timeout=60, message="answers during the freeze (about 10 s)")
            stop_probes.set()
            for probe_thread in probes:
                probe_thread.join(timeout=5)
            thawed_at = time.monotonic()
        # After the thaw: every client is answered normally again, and keeps being (no poisoned connection).
        eventually(lambda: all(client.answers[-1].status == 200 for client in clients), timeout=20,
                   message="every client answered 200 after the thaw")
        back_at = time.monotonic()
        eventually(lambda: all(len(client.since(back_at)) >= 5 for client in clients), timeout=20, message="more answers after the thaw")
    finally:
        stop_clients.set()
        stop_probes.set()
        for thread in threads:
            thread.join(timeout=35)

    during = [answer for client in clients for answer in client.since(frozen_at) if answer.sent + answer.seconds < thawed_at]
    sent_during = [answer for client in clients for answer in client.since(frozen_at) if answer.sent < thawed_at]
    after = [answer for client in clients for answer in client.since(back_at)]
    ready = [answer for answer in readiness.answers if frozen_at <= answer.sent < thawed_at]
    alive = [answer for answer in liveness.answers if frozen_at <= answer.sent < thawed_at]
    longest = max(answer.seconds for answer in sent_during)
    print(f"\nfrozen {thawed_at - frozen_at:.1f}s, deadline {WEB_DEADLINE}s: {len(during)} answers during the freeze, "
          f"statuses {sorted({(a.status, a.code) for a in during}, key=str)}, slowest request {longest:.2f}s, "
          f"median {sorted(a.seconds for a in sent_during)[len(sent_during) // 2]:.3f}s; "
          f"/readyz {[(a.status, round(a.seconds, 2)) for a in ready]}; "
          f"/healthz on the ops port: {sum(a.status == 200 for a in alive)}/{len(alive)} 200, "
          f"slowest {max((a.seconds for a in alive), default=float('nan')):.3f}s")

    problems = []
    wrong = [(a.status, a.code) for a in during if (a.status, a.code) != (503, "database_unavailable")]
    if wrong:
        problems.append(f"(1) answers during the freeze that were not 503 database_unavailable: {wrong[:10]}")
    if longest > WEB_DEADLINE + SLACK:
        problems.append(f"(1) a request sent during the freeze took {longest:.2f}s (bound {WEB_DEADLINE + SLACK}s)")
    if not ready or any(a.status != 503 or a.seconds > WEB_DEADLINE + SLACK for a in ready):
        problems.append(f"(2) /readyz during the freeze: {[(a.status, round(a.seconds, 2)) for a in ready]}")
    if not alive or any(a.status != 200 or a.seconds > 1.0 for a in alive):
        problems.append(f"(3) /healthz on the ops port during the freeze: {[(a.status, round(a.seconds, 2)) for a in alive]}")
    if any(a.status != 200 for a in after):
        problems.append(f"(4) answers after the thaw: {sorted({(a.status, a.code) for a in after}, key=str)}")
    with requests.Session() as session:
        readyz = call(session, f"{web.base}/readyz", {}, 10)
    if readyz.status != 200:
        problems.append(f"(4) /readyz after the thaw: {readyz.status}")
    assert not problems, "\n".join(problems) + f"\n(gunicorn log: {web.log})"


# --- a worker ------------------------------------------------------------------------------------


def test_a_consumer_backs_off_while_the_database_is_frozen_and_applies_after_the_thaw(postgres, database, start_consumer,
                                                                                        settings_for, broker_channel, caplog):
    engine = create_engine(database, deadline_seconds=DEADLINE)
    probe.metadata.create_all(engine)
    try:
        consumer = start_consumer(engine, database)
        queue = settings_for("probe", database).queue
        with postgres.frozen():
            with publishing(settings_for("producer", database)) as send:
                send(events.Event(type=probe.THING, producer="probe", data={"sequence": 1}))
            eventually(lambda: queue_depth(broker_channel, queue) == 0, message="the consumer to take the event")
            # It met the frozen database (the deadline ran out), and its loop goes on beating while it
            # waits to try again, rather than hanging in a wait on the database.
            eventually(lambda: "DatabaseNotAnswering" in caplog.text, timeout=DEADLINE + 5, message="the stall to be noticed")
            noticed = time.monotonic()
            eventually(lambda: consumer.last_beat > noticed + DEADLINE + 0.5, timeout=DEADLINE + 5,
                       message="the consumer beating after a deadline's length of freeze")
        eventually(lambda: when_answering(lambda: probe.applied_counts(engine)) == (1, 1), timeout=30,
                   message="the event applied after the thaw")
    finally:
        engine.dispose()
