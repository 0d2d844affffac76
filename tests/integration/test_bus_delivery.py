"""Nothing lost, nothing doubled: the outbox, the bus and the inbox on the real RabbitMQ and PostgreSQL.

The probe's effect is not idempotent (one row per application), so an event applied
twice would show as two rows.
"""

from __future__ import annotations

import signal

import sqlalchemy as sa
from prometheus_client import REGISTRY

from clinic import bus, events
from clinic.cli import list_dead_letters, list_unrouted, replay_dead_letters, replay_unrouted
from clinic.db import create_engine
from clinic.outbox import pending_count
from clinic.testing import eventually
from tests.integration.conftest import queue_depth
from tests.support import probe


class Outcomes:
    """The probe consumer's applied and duplicate counts since this was made, from its metrics."""

    def __init__(self, event_type: str = probe.THING):
        self.labels = {"service": "probe", "event_type": event_type}
        self.start = self.now()

    def now(self) -> tuple[float, float]:
        return tuple(REGISTRY.get_sample_value(name, self.labels) or 0.0
                     for name in ("clinic_messages_applied_total", "clinic_messages_duplicate_total"))

    def since(self) -> tuple[int, int]:
        """(applied, skipped as duplicates)."""
        return tuple(int(now - start) for now, start in zip(self.now(), self.start, strict=True))


def test_10000_events_survive_a_broker_restart_part_way(broker, probe_databases, start_consumer, start_relay):
    # Enough events that the consumer (batches) is still busy with them while the broker stops.
    total = 10_000
    producer, consumer, (producer_url, consumer_url) = probe_databases
    start_consumer(consumer, consumer_url)
    probe.write_events(producer, total)
    start_relay(producer, producer_url)

    eventually(lambda: probe.applied_counts(consumer)[0] >= 300, timeout=30, message="the first events to arrive")
    broker.stop_broker()
    try:
        assert probe.applied_counts(consumer)[0] < total, "the broker went down too late to test anything"
    finally:
        broker.start_broker()

    eventually(lambda: probe.applied_counts(consumer)[1] == total, timeout=120, message=f"all {total} events applied")
    assert probe.applied_counts(consumer) == (total, total)
    assert pending_count(producer, probe.outbox) == 0
    with consumer.connect() as connection:
        sequences = connection.execute(sa.select(probe.applied.c.sequence)).scalars().all()
    assert sorted(sequences) == list(range(total))


def test_the_same_event_delivered_twice_has_one_effect(probe_databases, start_consumer, settings_for):
    _, consumer, (_, consumer_url) = probe_databases
    start_consumer(consumer, consumer_url)
    settings = settings_for("producer", consumer_url)
    twice = events.Event(type=probe.THING, data={"sequence": 1}, producer="probe")
    after = events.Event(type=probe.THING, data={"sequence": 2}, producer="probe")
    publisher = bus.Publisher(settings)
    for event in (twice, twice, after):
        publisher.publish(event.type, event.id, event.to_json())
    publisher.close()

    # One consumer handles its queue in order, so once `after` is applied both copies were handled.
    eventually(lambda: probe.applied_counts(consumer)[1] == 2, message="both events applied")
    with consumer.connect() as connection:
        rows = connection.execute(sa.select(probe.applied.c.event_id)).scalars().all()
    assert sorted(rows) == sorted([twice.id, after.id])


def test_a_killed_consumer_loses_nothing_and_doubles_nothing(probe_databases, start_relay, probe_process):
    producer, consumer, (producer_url, consumer_url) = probe_databases
    worker = probe_process(consumer_url)
    probe.write_events(producer, 3000)
    start_relay(producer, producer_url)

    eventually(lambda: probe.applied_counts(consumer)[0] >= 200, timeout=30, message="the consumer to be mid-stream")
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    killed_at = probe.applied_counts(consumer)[0]
    assert killed_at < 3000, "the consumer finished before it could be killed"

    probe_process(consumer_url)
    eventually(lambda: probe.applied_counts(consumer)[1] == 3000, timeout=90, message="all 3000 events applied")
    assert probe.applied_counts(consumer) == (3000, 3000)


def test_poison_messages_end_in_the_dead_letter_queue_and_the_rest_flow(probe_databases, start_consumer, settings_for, broker_channel):
    _, consumer, (_, consumer_url) = probe_databases
    settings = settings_for("probe", consumer_url)
    start_consumer(consumer, consumer_url, retry_delays_seconds=(0.1, 0.2))
    publisher = bus.Publisher(settings)
    poison = events.Event(type=probe.POISON, data={"sequence": 0}, producer="probe")
    bad_schema = events.Event(type=probe.THING, data={"sequence": "not a number"}, producer="probe")
    unknown_version = events.Event(type=probe.THING, version=99, data={"sequence": 0}, producer="probe")
    good = [events.Event(type=probe.THING, data={"sequence": n}, producer="probe") for n in range(3)]
    publisher.channel.queue_bind(settings.queue, settings.exchange, routing_key=probe.POISON)
    for event in (poison, bad_schema, unknown_version, *good):
        publisher.publish(event.type, event.id, event.to_json())
    publisher.publish(probe.THING, "not-json", b"{ this is not an event")
    publisher.close()

    eventually(lambda: probe.applied_counts(consumer) == (3, 3), message="the good events applied")
    eventually(lambda: queue_depth(broker_channel, settings.dead_letter_queue) == 4, timeout=20,
               message="four dead letters (failing handler after its retries, bad schema, unknown version, not JSON)")
    dead = {row["id"]: row for row in list_dead_letters(settings)}
    assert set(dead) == {poison.id, bad_schema.id, unknown_version.id, "not-json"}
    assert dead[poison.id]["attempts"] == 3 and dead[poison.id]["exception"] == "RuntimeError"
    assert dead["not-json"]["reason"] == "not a valid event of a known type and version"
    assert {row["routing_key"] for row in dead.values()} == {probe.POISON, probe.THING}
    assert queue_depth(broker_channel, settings.queue) == 0

    # An operator can send them back once the cause is fixed; here the handler still fails, so
    # the poison message returns to the dead-letter queue instead of looping.
    assert replay_dead_letters(settings) == 4
    eventually(lambda: queue_depth(broker_channel, settings.dead_letter_queue) == 4, timeout=20, message="dead again")
    assert probe.applied_counts(consumer) == (3, 3)


def test_a_relay_killed_between_confirm_and_mark_sends_again_and_the_inbox_absorbs_it(
        probe_databases, start_consumer, probe_process):
    producer, consumer, (producer_url, consumer_url) = probe_databases
    outcomes = Outcomes()
    start_consumer(consumer, consumer_url)
    probe.write_events(producer, 1)
    crashing = probe_process(producer_url, PROBE_CRASH_AFTER_CONFIRM="1", PROBE_RELAY_ONLY="1")
    assert crashing.wait(timeout=30) == 137, crashing.stderr.read().decode()[-2000:]
    eventually(lambda: outcomes.since() == (1, 0), message="the confirmed event applied")
    assert pending_count(producer, probe.outbox) == 1, "the row must still be unpublished after the crash"

    probe_process(producer_url, PROBE_RELAY_ONLY="1")
    eventually(lambda: pending_count(producer, probe.outbox) == 0, timeout=20, message="the row published again")
    eventually(lambda: outcomes.since() == (1, 1), message="the second copy absorbed")
    assert probe.applied_counts(consumer) == (1, 1)


def test_an_event_nobody_consumes_is_kept_and_does_not_stall_the_relay(
        probe_databases, start_consumer, start_relay, settings_for, broker_channel):
    producer, consumer, (producer_url, consumer_url) = probe_databases
    settings = settings_for("probe", consumer_url)
    start_consumer(consumer, consumer_url)
    probe.write_events(producer, 1, event_type=probe.UNHEARD)
    probe.write_events(producer, 5, start=1)
    start_relay(producer, producer_url)

    eventually(lambda: probe.applied_counts(consumer) == (5, 5), message="the events after the unheard one")
    assert pending_count(producer, probe.outbox) == 0
    method, properties, body = broker_channel.basic_get(settings.unrouted_queue, auto_ack=True)
    assert method is not None, "the unrouted event was not kept"
    assert properties.type == probe.UNHEARD
    assert events.parse(body).data == {"sequence": 0}


def test_two_relay_replicas_publish_each_event_once_and_in_order(probe_databases, start_consumer, start_relay):
    producer, consumer, (producer_url, consumer_url) = probe_databases
    outcomes = Outcomes()
    start_consumer(consumer, consumer_url)
    probe.write_events(producer, 1000)
    start_relay(producer, producer_url)
    start_relay(producer, producer_url)
    eventually(lambda: probe.applied_counts(consumer)[1] == 1000, timeout=60, message="all 1000 events applied")
    eventually(lambda: outcomes.since()[0] == 1000, message="the applied events counted")
    assert outcomes.since() == (1000, 0), "a row was published by both replicas"
    with consumer.connect() as connection:
        sequences = connection.execute(sa.select(probe.applied.c.sequence).order_by(probe.applied.c.row)).scalars().all()
    assert sequences == list(range(1000)), "the service's events arrived out of order"


def test_the_embedded_sqlite_default_relays_and_applies_once(tmp_path, start_consumer, start_relay):
    urls = [f"sqlite:///{tmp_path / 'producer.db'}", f"sqlite:///{tmp_path / 'consumer.db'}"]
    producer, consumer = (create_engine(url) for url in urls)
    for engine in (producer, consumer):
        probe.metadata.create_all(engine)
    start_consumer(consumer, urls[1])
    probe.write_events(producer, 300)
    start_relay(producer, urls[0])
    eventually(lambda: probe.applied_counts(consumer) == (300, 300), timeout=30, message="300 events applied")
    assert pending_count(producer, probe.outbox) == 0


def test_two_consumers_receiving_the_same_events_at_once_apply_each_once(probe_databases, start_consumer, settings_for):
    _, consumer, (_, consumer_url) = probe_databases
    start_consumer(consumer, consumer_url)
    start_consumer(consumer, consumer_url)
    publisher = bus.Publisher(settings_for("producer", consumer_url))
    sent = [events.Event(type=probe.THING, data={"sequence": n}, producer="probe") for n in range(200)]
    for event in sent:
        # Back to back, so the two consumers (round-robin) usually hold the two copies at the same moment.
        publisher.publish(event.type, event.id, event.to_json())
        publisher.publish(event.type, event.id, event.to_json())
    publisher.close()
    eventually(lambda: probe.applied_counts(consumer)[1] == 200, timeout=30, message="all 200 events applied")
    with consumer.connect() as connection:
        inbox_rows = connection.execute(sa.select(sa.func.count()).select_from(probe.inbox)).scalar_one()
    assert probe.applied_counts(consumer) == (200, 200)
    assert inbox_rows == 200


def test_events_published_before_their_consumer_existed_can_be_replayed_to_it(probe_databases, start_consumer, start_relay,
                                                                              settings_for, broker_channel):
    producer, consumer, (producer_url, consumer_url) = probe_databases
    settings = settings_for("probe", consumer_url)
    probe.write_events(producer, 20)
    start_relay(producer, producer_url)
    eventually(lambda: pending_count(producer, probe.outbox) == 0, message="the events published")
    eventually(lambda: queue_depth(broker_channel, settings.unrouted_queue) == 20, message="all 20 kept as unrouted")

    start_consumer(consumer, consumer_url)  # declares its queue and bindings only now
    assert [row["type"] for row in list_unrouted(settings)] == [probe.THING] * 20
    assert replay_unrouted(settings) == 20
    eventually(lambda: probe.applied_counts(consumer) == (20, 20), message="the replayed events applied")
    assert queue_depth(broker_channel, settings.unrouted_queue) == 0


def test_a_queue_declared_when_its_service_is_migrated_keeps_what_is_published_before_its_worker_runs(
        probe_databases, start_consumer, start_relay, settings_for, broker_channel):
    producer, consumer, (producer_url, consumer_url) = probe_databases
    settings = settings_for("probe", consumer_url)
    bus.declare_consumer(settings, [probe.THING])   # as `make run` does for every consumer before any relay
    probe.write_events(producer, 20)
    start_relay(producer, producer_url)
    eventually(lambda: pending_count(producer, probe.outbox) == 0, message="the events published")
    assert queue_depth(broker_channel, settings.queue) == 20
    assert queue_depth(broker_channel, settings.unrouted_queue) == 0

    start_consumer(consumer, consumer_url)
    eventually(lambda: probe.applied_counts(consumer) == (20, 20), message="the waiting events applied")


def test_every_worker_names_what_it_consumes_for_its_queue_to_be_declared_ahead_of_it():
    import importlib

    from clinic.config import load_settings
    from clinic.testing.service_apps import SERVICES

    for service in SERVICES:
        consumed = importlib.import_module(f"{service}.worker").handlers(load_settings(service, env={}))
        assert all(event_type in events.EVENT_TYPES for event_type in consumed), service
    assert events.ROOM_CHANGED in importlib.import_module("sessions.worker").handlers(load_settings("sessions", env={}))
