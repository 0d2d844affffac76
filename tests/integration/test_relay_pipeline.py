"""The outbox relay with its confirms pipelined, on the real RabbitMQ and PostgreSQL.

The broker is made to withhold confirms with a memory alarm (`set_vm_memory_high_watermark 0`
blocks every publishing connection until the watermark is raised again), to refuse publishes with
a full queue (x-overflow reject-publish nacks them), and to drop connections (close_all_connections).
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from clinic import bus, events, metrics
from clinic.db import create_engine, utcnow
from clinic.outbox import Relay, backlog, pending_count
from clinic.testing import eventually
from tests.support import probe

# The relay's advisory lock key (clinic.outbox), as PostgreSQL shows a bigint key in pg_locks.
_LOCK_KEY = 0x6F7574626F78
_LOCK_CLASSID, _LOCK_OBJID = _LOCK_KEY >> 32, _LOCK_KEY & 0xFFFFFFFF


def rabbitmqctl(broker, *args: str) -> None:
    """Run rabbitmqctl against the session's broker (one the tests started: a broker given by URL
    is not ours to put under an alarm)."""
    if broker._local is not None:
        broker._local.ctl(*args)
    elif broker._container is not None:
        broker._container.exec(["rabbitmqctl", *args])
    else:
        pytest.fail("this test needs a broker the tests start, not CLINIC_TEST_RABBITMQ_URL", pytrace=False)


@contextmanager
def publishers_blocked(broker):
    """A memory alarm: the broker stops reading from every connection that publishes, so no confirm
    comes back, until it ends."""
    rabbitmqctl(broker, "set_vm_memory_high_watermark", "0")
    try:
        yield
    finally:
        rabbitmqctl(broker, "set_vm_memory_high_watermark", "0.4")   # RabbitMQ's default


def outbox_rows(engine) -> list[dict]:
    with engine.connect() as connection:
        query = sa.select(probe.outbox.c.position, probe.outbox.c.published_at, probe.outbox.c.attempts,
                          probe.outbox.c.last_error).order_by(probe.outbox.c.position)
        return [dict(row._mapping) for row in connection.execute(query)]


def sample(name: str, **labels) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def relay_session(engine) -> dict | None:
    """The backend holding the relay's advisory lock in this database: its pid, state and transaction start."""
    with engine.connect() as connection:
        row = connection.execute(sa.text(
            "SELECT a.pid, a.state, a.xact_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :classid AND l.objid = :objid "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
            {"classid": _LOCK_CLASSID, "objid": _LOCK_OBJID}).mappings().first()
        return dict(row) if row else None


def open_transactions(engine) -> list[str]:
    """The states of the other backends of this database that are inside a transaction."""
    with engine.connect() as connection:
        return list(connection.execute(sa.text(
            "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND xact_start IS NOT NULL AND state <> 'active'")).scalars())


def test_no_transaction_is_open_while_the_broker_withholds_confirms(broker, probe_databases, start_consumer, start_relay):
    producer, consumer, (producer_url, consumer_url) = probe_databases
    start_consumer(consumer, consumer_url)
    metrics.OUTBOX_BACKLOG.labels("producer").set(-1)
    with publishers_blocked(broker):
        probe.write_events(producer, 50)
        relay = start_relay(producer, producer_url)
        eventually(lambda: relay.in_flight > 0, timeout=15, message="the relay to publish and wait for confirms")
        beat_then = relay.last_beat

        # Look at the relay's database session again and again while it waits (about a second).
        seen = []

        def look():
            seen.append((relay_session(producer), open_transactions(producer), relay.in_flight))
            return len(seen) >= 20

        eventually(look, message="20 looks at the relay's database session")
        assert all(in_flight > 0 for _, _, in_flight in seen), "the confirms came back: nothing was withheld"
        assert all(session is not None for session, _, _ in seen), "the relay does not hold its lock while it waits"
        assert [states for _, states, _ in seen if states] == [], "a transaction stayed open while the broker withheld confirms"
        assert any(session["state"] == "idle" and session["xact_start"] is None for session, _, _ in seen)
        assert pending_count(producer, probe.outbox) > 0
        # Still alive and watched while it waits: it beats, and the backlog gauges stay current.
        eventually(lambda: relay.last_beat > beat_then + 0.5, message="the relay to beat while it waits")
        eventually(lambda: sample("clinic_outbox_backlog", service="producer") == pending_count(producer, probe.outbox) > 0,
                   message="the backlog gauge to count what waits")
        assert sample("clinic_outbox_oldest_unpublished_age_seconds", service="producer") > 0

    eventually(lambda: probe.applied_counts(consumer) == (50, 50), timeout=30, message="all 50 applied once the alarm ended")
    assert pending_count(producer, probe.outbox) == 0


def test_a_connection_lost_mid_window_sends_the_unconfirmed_again(broker, probe_databases, start_consumer, start_relay):
    producer, consumer, (producer_url, consumer_url) = probe_databases
    start_consumer(consumer, consumer_url)
    with publishers_blocked(broker):
        probe.write_events(producer, 300)
        relay = start_relay(producer, producer_url)
        eventually(lambda: relay.in_flight > 0, timeout=15, message="the relay to publish and wait for confirms")
        rabbitmqctl(broker, "close_all_connections", "a test drops the connections")
        # Each row that was in flight and not confirmed says why it is still unpublished.
        eventually(lambda: any(row["last_error"] for row in outbox_rows(producer)), timeout=15,
                   message="the failed attempt noted on the rows that were in flight")
        noted = [row["position"] for row in outbox_rows(producer) if row["last_error"]]
        assert all(row["published_at"] is None and row["attempts"] >= 1 for row in outbox_rows(producer) if row["last_error"])

    # Everything arrives (copies allowed, the inbox drops them), nothing is applied twice.
    eventually(lambda: probe.applied_counts(consumer)[1] == 300, timeout=60, message="all 300 applied")
    assert probe.applied_counts(consumer) == (300, 300)
    assert pending_count(producer, probe.outbox) == 0
    rows = {row["position"]: row for row in outbox_rows(producer)}
    assert all(row["last_error"] is None for row in rows.values()), "last_error stays after the row was published"
    assert all(rows[position]["attempts"] >= 2 for position in noted), "the attempt that failed was not counted"


def test_rows_the_broker_refuses_are_sent_again_in_order_once_it_takes_them(probe_databases, start_relay, settings_for,
                                                                              broker_channel):
    producer, _, (producer_url, _) = probe_databases
    settings = settings_for("producer", producer_url)
    bus.declare_exchanges(broker_channel, settings)
    small = f"{settings.bus_namespace}.small"
    # A full queue refuses what comes next: the broker nacks it (no other queue is bound to these events).
    # A classic queue: a quorum queue's length limit is approximate, it may take all ten.
    broker_channel.queue_declare(small, durable=True, arguments={"x-max-length": 5, "x-overflow": "reject-publish"})
    broker_channel.queue_bind(small, settings.exchange, routing_key=probe.THING)
    probe.write_events(producer, 10)
    start_relay(producer, producer_url)

    def refused_noted():
        rows = outbox_rows(producer)
        taken = [row for row in rows if row["published_at"]]
        return (len(taken) == 5 and rows[:5] == taken
                and all(row["last_error"] == "NackError" for row in rows[len(taken):]))

    eventually(refused_noted, message="the rows the full queue refused noted as refused, after those it took")

    received = []

    def take_all():
        while True:
            method, _properties, body = broker_channel.basic_get(small, auto_ack=True)
            if method is None:
                break
            received.append(events.parse(body).data["sequence"])
        return pending_count(producer, probe.outbox) == 0 and len(set(received)) == 10

    eventually(take_all, timeout=30, message="every row taken once the queue has room")
    assert list(dict.fromkeys(received)) == list(range(10)), "the rows sent again overtook each other"
    assert all(row["last_error"] is None for row in outbox_rows(producer))
    assert all(row["attempts"] >= 2 for row in outbox_rows(producer)[-1:]), "the refused attempt was not counted"
    broker_channel.queue_delete(small)


def test_backlog_counts_the_unpublished_rows_and_the_age_of_the_oldest(probe_databases, start_relay):
    producer, _, (producer_url, _) = probe_databases
    assert backlog(producer, probe.outbox) == (0, None)
    probe.write_events(producer, 5)
    with producer.begin() as connection:
        first = connection.execute(sa.select(sa.func.min(probe.outbox.c.position))).scalar_one()
        connection.execute(probe.outbox.update().where(probe.outbox.c.position == first)
                           .values(created_at=utcnow() - timedelta(seconds=90)))
    count, age = backlog(producer, probe.outbox)
    assert count == 5 and 90 <= age < 120

    published_before = sample("clinic_relay_published_total", service="producer") or 0
    metrics.OUTBOX_BACKLOG.labels("producer").set(-1)
    metrics.OUTBOX_OLDEST_AGE_SECONDS.labels("producer").set(-1)
    start_relay(producer, producer_url)
    eventually(lambda: backlog(producer, probe.outbox) == (0, None), message="the outbox emptied")
    eventually(lambda: sample("clinic_outbox_backlog", service="producer") == 0, message="the backlog gauge at 0")
    assert sample("clinic_outbox_oldest_unpublished_age_seconds", service="producer") == 0
    assert sample("clinic_relay_published_total", service="producer") == published_before + 5
    assert abs(sample("clinic_relay_last_publish_timestamp_seconds", service="producer") - utcnow().timestamp()) < 30


def test_the_embedded_sqlite_backlog(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'producer.db'}")
    probe.metadata.create_all(engine)
    assert backlog(engine, probe.outbox) == (0, None)
    probe.write_events(engine, 3)
    count, age = backlog(engine, probe.outbox)
    assert count == 3 and 0 <= age < 30
    engine.dispose()


def test_a_stopped_replica_hands_over_to_the_one_waiting(probe_databases, start_consumer, settings_for, inbox_outcomes):
    producer, consumer, (producer_url, consumer_url) = probe_databases
    start_consumer(consumer, consumer_url)
    first, second = (Relay(settings_for("producer", producer_url), producer, probe.outbox) for _ in range(2))
    first_thread = threading.Thread(target=first.run, daemon=True)
    first_thread.start()
    probe.write_events(producer, 20)
    eventually(lambda: probe.applied_counts(consumer)[1] == 20, message="the first replica's events applied")
    second_thread = threading.Thread(target=second.run, daemon=True)
    second_thread.start()
    try:
        first.stop()
        first_thread.join(timeout=15)
        assert not first_thread.is_alive()
        probe.write_events(producer, 20, start=20)
        eventually(lambda: probe.applied_counts(consumer)[1] == 40, timeout=20, message="the second replica took over")
    finally:
        second.stop()
        second_thread.join(timeout=15)
    with consumer.connect() as connection:
        sequences = connection.execute(sa.select(probe.applied.c.sequence).order_by(probe.applied.c.row)).scalars().all()
    assert sequences == list(range(40))
    assert probe.applied_counts(consumer) == (40, 40)


def test_a_replica_that_loses_its_database_session_hands_over_and_nothing_is_lost(probe_databases, start_consumer,
                                                                                  start_relay):
    producer, consumer, (producer_url, consumer_url) = probe_databases
    start_consumer(consumer, consumer_url)
    start_relay(producer, producer_url)
    start_relay(producer, producer_url)
    probe.write_events(producer, 200)
    eventually(lambda: probe.applied_counts(consumer)[1] == 200, message="the first events applied")
    holder = eventually(lambda: relay_session(producer), message="a replica holding the lock")
    with producer.connect() as connection:
        connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": holder["pid"]})
    probe.write_events(producer, 200, start=200)
    eventually(lambda: probe.applied_counts(consumer)[1] == 400, timeout=30, message="the rest applied")
    assert probe.applied_counts(consumer) == (400, 400)
    assert relay_session(producer)["pid"] != holder["pid"]
    assert pending_count(producer, probe.outbox) == 0


def relay_log(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "clinic.outbox"]


def test_a_broker_outage_is_one_warning_and_one_line_when_it_is_back(broker, probe_databases, start_consumer, start_relay,
                                                                      caplog):
    caplog.set_level(logging.DEBUG, logger="clinic.outbox")
    producer, consumer, (producer_url, consumer_url) = probe_databases
    start_consumer(consumer, consumer_url)
    start_relay(producer, producer_url)
    probe.write_events(producer, 10)
    eventually(lambda: probe.applied_counts(consumer)[1] == 10, message="the first events applied")
    broker.stop_broker()
    try:
        probe.write_events(producer, 10, start=10)
        # Several attempts fail while the broker is away (the test's delays grow to 1 s).
        eventually(lambda: sum("still unavailable" in record.getMessage() for record in relay_log(caplog)) >= 2,
                   timeout=30, message="the relay to retry while the broker is away")
    finally:
        broker.start_broker()
    eventually(lambda: probe.applied_counts(consumer)[1] == 20, timeout=60, message="the events written during the outage")

    records = [record for record in relay_log(caplog) if record.levelno >= logging.INFO and "replica publishes" not in record.getMessage()]
    assert [(record.levelname, record.getMessage().split(" (")[0].split(" after")[0]) for record in records] == [
        ("WARNING", "relay: the broker unavailable"), ("INFO", "relay: the broker back")]
    assert not any(record.exc_info for record in relay_log(caplog)), "a traceback for an expected failure"


def test_a_database_outage_is_one_warning_and_one_line_when_it_is_back(postgres, probe_databases, start_relay, caplog):
    caplog.set_level(logging.DEBUG, logger="clinic.outbox")
    producer, _, (producer_url, _) = probe_databases
    relay = start_relay(producer, producer_url)
    probe.write_events(producer, 5)
    eventually(lambda: pending_count(producer, probe.outbox) == 0, message="the first events published")
    postgres.stop_server()
    try:
        eventually(lambda: sum("still unavailable" in record.getMessage() for record in relay_log(caplog)) >= 2,
                   timeout=30, message="the relay to retry while the database is away")
        beat = relay.last_beat
        eventually(lambda: relay.last_beat > beat + 0.5, message="the relay to beat while the database is away")
    finally:
        postgres.start_server()
    probe.write_events(producer, 5, start=5)
    eventually(lambda: pending_count(producer, probe.outbox) == 0, timeout=30, message="the events written after it")

    records = [record for record in relay_log(caplog) if record.levelno >= logging.INFO and "replica publishes" not in record.getMessage()]
    assert [(record.levelname, record.getMessage().split(" (")[0].split(" after")[0]) for record in records] == [
        ("WARNING", "relay: the database unavailable"), ("INFO", "relay: the database back")]
    assert not any(record.exc_info for record in relay_log(caplog)), "a traceback for an expected failure"
