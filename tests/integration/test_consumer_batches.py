"""The consumer applies what it holds in batches, on the real RabbitMQ and PostgreSQL (and SQLite):
one transaction per batch, one bad message neither blocks nor rolls back the others, and a copy of
an event in the same batch has no second effect. Also what keeps the bus tidy around it: the
unrouted queue's limits and the queues a migration declares.

The probe's effect is not idempotent (one row per application), so an event applied twice would
show as two rows.
"""

from __future__ import annotations

import logging
import threading
import time

import pika
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from clinic import bus, cli, events
from clinic.db import create_engine
from clinic.localservers import free_port
from clinic.testing import eventually
from tests.integration.conftest import queue_depth
from tests.support import probe
from tests.support.probe import publish, thing

DELAYS = (0.3, 0.6)


@pytest.fixture(params=["postgresql", "sqlite"])
def consumer_database(request, postgres, tmp_path):
    """(engine, URL) of the probe consumer's database, once on PostgreSQL and once on SQLite."""
    if request.param == "postgresql":
        url = postgres.create_database("consumer")
    else:
        url = f"sqlite:///{tmp_path / 'consumer.db'}"
    engine = create_engine(url)
    probe.metadata.create_all(engine)
    yield engine, url
    engine.dispose()
    if request.param == "postgresql":
        postgres.drop_database(url)


class Calls:
    """Handlers that note when each event reached them; the poison one always fails, quoting a
    patient's name as a database error would quote a row."""

    def __init__(self):
        self.at: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def note(self, event) -> None:
        with self.lock:
            self.at.setdefault(event.id, []).append(time.monotonic())

    def thing(self, uow, event) -> None:
        self.note(event)
        probe.record_thing(uow, event)

    def poison(self, uow, event) -> None:
        self.note(event)
        probe.record_thing(uow, event)   # written, then rolled back with the failure
        raise RuntimeError("cannot store the row for Maria Silva")

    def handlers(self) -> dict:
        return {probe.THING: self.thing, probe.POISON: self.poison}




def applied_rows(engine) -> list[tuple[str, int]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(
            sa.select(probe.applied.c.event_id, probe.applied.c.sequence).order_by(probe.applied.c.row))]


def received_at(engine, event_ids) -> set:
    with engine.connect() as connection:
        return set(connection.execute(
            sa.select(probe.inbox.c.received_at).where(probe.inbox.c.event_id.in_(event_ids))).scalars())


def sample(name: str, event_type: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": "probe", "event_type": event_type}) or 0.0


def test_one_poison_message_in_the_middle_of_a_batch_neither_blocks_nor_rolls_back_the_others(
        consumer_database, start_consumer, settings_for, broker_channel):
    engine, url = consumer_database
    changes = {"retry_delays_seconds": DELAYS, "batch_wait_seconds": 0.2}
    settings = settings_for("probe", url, **changes)
    calls = Calls()
    bus.declare_consumer(settings, calls.handlers())
    good = [thing(n) for n in range(10)]
    poison = thing(99, probe.POISON)
    publish(settings, *good[:5], poison, *good[5:])   # all waiting before the consumer starts: one batch
    retried_before = sample("clinic_messages_retried_total", probe.POISON)

    start_consumer(engine, url, calls.handlers(), **changes)
    eventually(lambda: len(applied_rows(engine)) == 10, message="the ten good events applied")
    assert applied_rows(engine) == [(event.id, n) for n, event in enumerate(good)], "applied once each, in order"
    # Those before the poison together, then (after the poison alone) those after it in two halves.
    assert len(received_at(engine, [event.id for event in good[:5]])) == 1, "those before the poison not applied together"
    assert len(received_at(engine, [event.id for event in good[5:7]])) == 1, "the first half after it not applied together"
    assert len(received_at(engine, [event.id for event in good[7:]])) == 1, "the second half after it not applied together"

    eventually(lambda: queue_depth(broker_channel, settings.dead_letter_queue) == 1, timeout=20,
               message="the poison message dead-lettered after its retries")
    # In the batch (rolled back with it), alone (attempt 1), then after each delay (attempts 2 and 3).
    at = calls.at[poison.id]
    assert len(at) == 4, at
    assert at[2] - at[1] >= DELAYS[0] and at[3] - at[2] >= DELAYS[1], "a retry came back before its delay"
    assert sample("clinic_messages_retried_total", probe.POISON) - retried_before == 2
    assert all(len(calls.at[event.id]) <= 2 for event in good)
    assert applied_rows(engine) == [(event.id, n) for n, event in enumerate(good)], "the poison's effect was committed"

    method, properties, _body = broker_channel.basic_get(settings.dead_letter_queue, auto_ack=True)
    headers = properties.headers
    assert method.routing_key == probe.POISON, "the routing key was lost on the way to the dead letters"
    assert properties.message_id == poison.id
    assert headers[bus.EXCEPTION_HEADER] == "RuntimeError" and headers[bus.ATTEMPTS_HEADER] == 3
    assert "Maria" not in str(headers)
    # Every trip through a delay queue kept the original routing key.
    trips = [death for death in headers["x-death"] if death["queue"].startswith(settings.queue + ".wait.")]
    assert sum(death["count"] for death in trips) == 2
    assert all(death["routing-keys"] == [probe.POISON] for death in trips)


def test_the_same_event_twice_in_one_batch_has_one_effect(consumer_database, start_consumer, settings_for):
    engine, url = consumer_database
    changes = {"batch_wait_seconds": 0.2}
    settings = settings_for("probe", url, **changes)
    bus.declare_consumer(settings, probe.HANDLERS)
    twice, other = thing(1), thing(2)
    duplicates_before = sample("clinic_messages_duplicate_total", probe.THING)
    publish(settings, twice, other, twice)

    start_consumer(engine, url, **changes)
    eventually(lambda: sample("clinic_messages_duplicate_total", probe.THING) - duplicates_before == 1,
               message="the second copy skipped")
    assert applied_rows(engine) == [(twice.id, 1), (other.id, 2)]
    assert len(received_at(engine, [twice.id, other.id])) == 1, "not one batch"


def test_a_failing_message_is_applied_alone_and_a_copy_of_it_in_the_batch_is_not_applied_again(
        consumer_database, start_consumer, settings_for):
    """The first try of a flaky event fails in the batch; alone, it succeeds: applied once, no retry."""
    engine, url = consumer_database
    changes = {"batch_wait_seconds": 0.2, "retry_delays_seconds": DELAYS}
    settings = settings_for("probe", url, **changes)
    bus.declare_consumer(settings, probe.HANDLERS)
    flaky, before, after = thing(7), thing(6), thing(8)
    tries = []

    def fails_the_first_time(uow, event):
        if event.id == flaky.id:
            tries.append(event.id)
            if len(tries) == 1:
                raise RuntimeError("not yet")
        probe.record_thing(uow, event)

    retried_before = sample("clinic_messages_retried_total", probe.THING)
    publish(settings, before, flaky, after, flaky)
    start_consumer(engine, url, {probe.THING: fails_the_first_time}, **changes)
    eventually(lambda: len(applied_rows(engine)) == 3, message="all three applied")
    # In the batch's order: the failed one on its own, between the one before it and the one after it.
    assert applied_rows(engine) == [(before.id, 6), (flaky.id, 7), (after.id, 8)]
    assert len(tries) == 2
    assert sample("clinic_messages_retried_total", probe.THING) == retried_before


def test_the_consumer_beats_while_it_waits_and_reports_the_unrouted_depth(probe_databases, start_consumer, settings_for):
    _, consumer, (_, url) = probe_databases
    settings = settings_for("probe", url)
    publish(settings, thing(1, probe.UNHEARD), thing(2, probe.UNHEARD))   # no queue is bound to these
    started = time.monotonic()
    running = start_consumer(consumer, url)
    assert running.last_beat >= started
    eventually(lambda: REGISTRY.get_sample_value("clinic_unrouted_messages", {"service": "probe"}) == 2,
               message="the unrouted depth in the metric")
    eventually(lambda: running.last_beat > started + 1.5, timeout=5, message="a beat while idle")


def test_the_unrouted_queue_keeps_only_the_newest_events_up_to_its_length(settings_for, broker_channel):
    settings = settings_for("probe", "sqlite://", unrouted_max_length=3)
    sent = [thing(n, probe.UNHEARD) for n in range(5)]
    publish(settings, *sent)
    eventually(lambda: queue_depth(broker_channel, settings.unrouted_queue) == 3, message="three kept")
    assert [row["id"] for row in cli.list_unrouted(settings)] == [event.id for event in sent[2:]]


def test_unrouted_events_older_than_the_ttl_go(settings_for, broker_channel):
    settings = settings_for("probe", "sqlite://", unrouted_ttl_seconds=1)
    publish(settings, thing(1, probe.UNHEARD))
    assert queue_depth(broker_channel, settings.unrouted_queue) == 1
    eventually(lambda: queue_depth(broker_channel, settings.unrouted_queue) == 0, timeout=10, message="the event expired")


def test_an_unrouted_queue_from_before_the_limits_is_replaced_when_empty_and_kept_when_not(settings_for, broker_channel, caplog):
    settings = settings_for("probe", "sqlite://", unrouted_max_length=2)
    # As declared before there were limits.
    broker_channel.queue_declare(settings.unrouted_queue, durable=True, arguments={"x-queue-type": "quorum"})
    broker_channel.basic_publish("", settings.unrouted_queue, b"{}")
    with caplog.at_level(logging.WARNING, logger="clinic.bus"):
        publish(settings, *[thing(n, probe.UNHEARD) for n in range(3)])   # declares the exchanges: no crash
    assert queue_depth(broker_channel, settings.unrouted_queue) == 4, "the old queue was not kept as it is"
    assert "CLINIC_UNROUTED_MAX_LENGTH" in caplog.text

    broker_channel.queue_purge(settings.unrouted_queue)
    publish(settings, *[thing(n, probe.UNHEARD) for n in range(3)])
    assert queue_depth(broker_channel, settings.unrouted_queue) == 2, "the empty old queue did not get the limits"


@pytest.fixture
def service_environment(monkeypatch, postgres, broker, bus_namespace):
    """notifications' settings from the environment, as `clinic migrate` reads them: a fresh database."""
    url = postgres.create_database("notifications")
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("RABBITMQ_URL", broker.url_for("notifications"))   # what its own account may declare
    monkeypatch.setenv("CLINIC_BUS_NAMESPACE", bus_namespace)
    monkeypatch.setenv("CLINIC_RETRY_DELAYS", "1,5")
    yield url
    postgres.drop_database(url)


def test_migrating_a_service_declares_its_queue_so_events_published_before_its_worker_wait_for_it(
        service_environment, settings_for, broker_channel, capsys):
    assert cli.main(["migrate", "notifications"]) == 0
    settings = settings_for("notifications", service_environment)
    contact = {"patient_id": "5f0c1d52-3c09-4d5c-8d8e-1f7f5b5f0a11", "given_name": "Ida", "family_name": "Berg",
               "email": "ida@example.org", "phone": None, "preferred_contact": "email", "email_opt_out": False}
    event = events.Event(type=events.PATIENT_CONTACT_CHANGED, producer="records",
                         data=events.serialise_payload(events.PATIENT_CONTACT_CHANGED, contact))
    publish(settings, event)
    assert queue_depth(broker_channel, settings.queue) == 1
    assert queue_depth(broker_channel, settings.unrouted_queue) == 0
    for queue in (settings.dead_letter_queue, f"{settings.queue}.wait.1000ms", f"{settings.queue}.wait.5000ms"):
        assert queue_depth(broker_channel, queue) == 0   # there (a passive declaration of a missing queue fails)
    assert "declared" in capsys.readouterr().out


def test_migrating_without_a_broker_migrates_the_database_then_says_the_queue_is_not_declared(
        service_environment, monkeypatch, capsys):
    monkeypatch.setenv("RABBITMQ_URL", f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
    monkeypatch.setenv("CLINIC_MIGRATE_WAIT_SECONDS", "1")   # it waits for a broker that may be starting
    assert cli.main(["migrate", "notifications"]) == 1
    captured = capsys.readouterr()
    assert "database at the latest revision" in captured.out
    assert "RabbitMQ is not reachable" in captured.err and "not declared" in captured.err
    engine = create_engine(service_environment)
    try:
        assert "inbox" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_a_consumer_declares_retry_queues_named_by_their_delay_so_a_new_configuration_adds_queues(
        settings_for, broker_channel):
    first = settings_for("probe", "sqlite://", retry_delays_seconds=(1.0, 5.0))
    bus.declare_consumer(first, probe.HANDLERS)
    changed = first.with_changes(retry_delays_seconds=(2.0, 5.0, 30.0))
    bus.declare_consumer(changed, probe.HANDLERS)   # no PRECONDITION_FAILED
    for milliseconds in (1000, 2000, 5000, 30000):
        assert queue_depth(broker_channel, f"{first.queue}.wait.{milliseconds}ms") == 0


def test_a_message_published_to_the_retry_exchange_reaches_only_its_own_queues_delay(settings_for, broker):
    """The headers bindings match on the x-clinic-* headers (RabbitMQ's plain x-match=all ignores x- headers)."""
    mine = settings_for("probe", "sqlite://", retry_delays_seconds=(60.0,))
    theirs = mine.with_changes(service="other")
    for settings in (mine, theirs):
        bus.declare_consumer(settings, [probe.THING])
    connection = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        properties = pika.BasicProperties(headers={bus.QUEUE_HEADER: mine.queue, bus.STEP_HEADER: "60000"})
        channel.basic_publish(bus.retry_exchange(mine), probe.THING, b"{}", properties, mandatory=True)
        depths = {queue: queue_depth(channel, queue) for queue in
                  (f"{mine.queue}.wait.60000ms", f"{theirs.queue}.wait.60000ms", mine.dead_letter_queue, mine.queue)}
    finally:
        connection.close()
    assert depths == {f"{mine.queue}.wait.60000ms": 1, f"{theirs.queue}.wait.60000ms": 0,
                      mine.dead_letter_queue: 0, mine.queue: 0}
