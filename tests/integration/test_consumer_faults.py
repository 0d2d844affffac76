"""What no single message, and no trouble of the broker's, may do to the consumer, on the real RabbitMQ
(and SQLite for the probe's database): a body that parsing chokes on, an error while sending a
message on, a batch full of failures, a failure's text in the log, a broker blocked by a resource
alarm, a broker that stops answering. (Just past 400 lines: the faults share one probe worker and its
fixtures, which is why they are one module.)

The last two stop or block a broker of their own (started here from the local packages), so the
session's broker, which other tests share, is never blocked or frozen.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from contextlib import contextmanager

import pika
import pytest
import sqlalchemy as sa

from clinic import bus, inbox
from clinic.db import create_engine
from clinic.errors import NotFound
from clinic.localservers import RABBITMQCTL, LocalRabbitMQ
from clinic.logs import OneLineFormatter
from clinic.testing import eventually
from tests.support import probe
from tests.support.probe import publish, thing

DELAYS = (0.05,)
# The body of a message that is JSON, but nested too deep for Python's parser (RecursionError).
TOO_DEEP = ('{"a":' * 100000 + "1" + "}" * 100000).encode()
# What an error's text may quote (a traceback shows the source line, never this value).
PATIENT = "Maria Silva"


@pytest.fixture
def database(tmp_path):
    """(engine, URL) of the probe consumer's SQLite database."""
    url = f"sqlite:///{tmp_path / 'consumer.db'}"
    engine = create_engine(url)
    probe.metadata.create_all(engine)
    yield engine, url
    engine.dispose()




def applied_sequences(engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(probe.applied.c.sequence).order_by(probe.applied.c.row)).scalars())


def dead_letters(url: str, settings) -> list[tuple[str, dict]]:
    """(message id, headers) of each message in the service's dead-letter queue, left there."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        found = []
        while True:
            method, properties, _body = channel.basic_get(settings.dead_letter_queue, auto_ack=False)
            if method is None:
                return found
            found.append((properties.message_id, properties.headers or {}))
    finally:
        connection.close()   # what was taken unacked goes back


def consumer_thread(running) -> threading.Thread:
    return running.items[-1][1]


# --- one message's trouble is its own ----------------------------------------------------------


def test_a_body_that_parsing_chokes_on_is_dead_lettered_at_once_and_the_consumer_goes_on(
        database, start_consumer, running, settings_for, broker):
    engine, url = database
    settings = settings_for("probe", url, retry_delays_seconds=DELAYS)
    start_consumer(engine, url, retry_delays_seconds=DELAYS)
    publisher = bus.Publisher(settings)
    try:
        publisher.publish(probe.THING, "too-deep", TOO_DEEP)   # a batch with nothing to apply
    finally:
        publisher.close()

    [(message_id, headers)] = eventually(lambda: dead_letters(broker.url, settings), message="the dead letter")
    assert message_id == "too-deep"
    assert headers[bus.REASON_HEADER] == "not a valid event of a known type and version"
    assert headers[bus.EXCEPTION_HEADER] == "RecursionError" and headers[bus.ATTEMPTS_HEADER] == 0
    publish(settings, thing(1))
    eventually(lambda: applied_sequences(engine) == [1], message="the event after it applied")
    assert consumer_thread(running).is_alive()


def test_an_error_of_a_message_s_own_while_it_is_sent_on_dead_letters_it_and_the_consumer_goes_on(
        database, start_consumer, running, settings_for, broker, monkeypatch, caplog):
    engine, url = database
    settings = settings_for("probe", url, retry_delays_seconds=DELAYS, batch_wait_seconds=0.2)
    bus.declare_consumer(settings, probe.HANDLERS)
    poison = thing(0, probe.POISON)
    reading = bus.expiries

    def expiries(headers, *args, **kwargs):
        # As a header the code did not expect would: reading this one message's headers fails.
        if headers and headers.get("x-test-odd"):
            raise KeyError(f"x-death entry for {PATIENT}")
        return reading(headers, *args, **kwargs)

    monkeypatch.setattr(bus, "expiries", expiries)
    sender = bus.Publisher(settings)
    try:
        sender.channel.basic_publish(settings.exchange, poison.type, poison.to_json(), pika.BasicProperties(
            message_id=poison.id, type=poison.type, delivery_mode=2, headers={"x-test-odd": 1}, user_id=sender.user))
    finally:
        sender.close()
    publish(settings, thing(1), thing(2))

    with caplog.at_level(logging.INFO, logger="clinic.inbox"):
        start_consumer(engine, url, retry_delays_seconds=DELAYS, batch_wait_seconds=0.2)
        eventually(lambda: applied_sequences(engine) == [1, 2], message="the others applied")
        [(message_id, headers)] = eventually(lambda: dead_letters(broker.url, settings), message="the dead letter")
    assert message_id == poison.id
    assert headers[bus.REASON_HEADER] == "could not be retried or dead-lettered"
    assert headers[bus.EXCEPTION_HEADER] == "KeyError"
    assert consumer_thread(running).is_alive()
    publish(settings, thing(3))
    eventually(lambda: applied_sequences(engine) == [1, 2, 3], message="a later event applied")
    assert "Maria" not in caplog.text


def test_a_message_that_cannot_even_be_dead_lettered_is_rejected_to_the_dead_letter_queue(
        database, start_consumer, running, settings_for, broker, monkeypatch):
    engine, url = database
    settings = settings_for("probe", url, retry_delays_seconds=DELAYS)
    bus.declare_consumer(settings, probe.HANDLERS)
    poison = thing(0, probe.POISON)
    forwarding = bus.forwarded

    def forwarded(properties, **headers):
        if properties.message_id == poison.id:
            raise TypeError("cannot forward it")
        return forwarding(properties, **headers)

    monkeypatch.setattr(bus, "forwarded", forwarded)
    publish(settings, poison)
    start_consumer(engine, url, retry_delays_seconds=DELAYS)
    [(message_id, headers)] = eventually(lambda: dead_letters(broker.url, settings), message="the dead letter")
    assert message_id == poison.id
    assert headers["x-death"][0]["reason"] == "rejected", "not the queue's own dead-lettering"
    publish(settings, thing(1))
    eventually(lambda: applied_sequences(engine) == [1], message="a later event applied")
    assert consumer_thread(running).is_alive()


def test_in_a_batch_full_of_failures_no_handler_runs_more_than_twice_and_each_good_event_applies_once_in_order(
        database, start_consumer, settings_for, broker):
    engine, url = database
    changes = {"retry_delays_seconds": DELAYS, "batch_wait_seconds": 0.3}
    settings = settings_for("probe", url, **changes)
    bus.declare_consumer(settings, probe.HANDLERS)
    calls: dict[str, int] = {}
    lock = threading.Lock()

    def counted(handler):
        def run(uow, event):
            with lock:
                calls[event.id] = calls.get(event.id, 0) + 1
            handler(uow, event)
        return run

    # Good and failing in turn: every good one but the last has a failure after it in the batch.
    sent = [thing(n, probe.THING if n % 2 == 0 else probe.POISON) for n in range(24)]
    good = [event for event in sent if event.type == probe.THING]
    publish(settings, *sent)   # all waiting before the consumer starts: one batch
    start_consumer(engine, url, {probe.THING: counted(probe.record_thing), probe.POISON: probe.always_fail}, **changes)

    eventually(lambda: len(dead_letters(broker.url, settings)) == 12, timeout=20, message="the failing ones dead-lettered")
    assert applied_sequences(engine) == [event.data["sequence"] for event in good], "not once each, in order"
    assert max(calls[event.id] for event in good) <= 2, calls



def test_a_retry_that_no_delay_queue_takes_is_kept_until_the_consumer_has_declared_them_again(
        database, start_consumer, settings_for, broker_channel, caplog):
    engine, url = database
    settings = settings_for("probe", url, retry_delays_seconds=DELAYS)
    tries = []

    def fails_once(uow, event):
        tries.append(event.id)
        if len(tries) == 1:
            raise RuntimeError("not yet")
        probe.record_thing(uow, event)

    with caplog.at_level(logging.INFO, logger="clinic.inbox"):
        start_consumer(engine, url, {probe.THING: fails_once}, retry_delays_seconds=DELAYS)
        broker_channel.queue_delete(bus.delay_queue(settings, bus.delay_milliseconds(DELAYS[0])))   # as an operator might
        publish(settings, thing(1))
        eventually(lambda: applied_sequences(engine) == [1], timeout=15, message="applied after its retry")
    assert len(tries) == 2
    consuming = [record for record in caplog.records if record.getMessage().startswith("consumer: consuming")]
    assert len(consuming) == 2, "the returned retry did not make the consumer declare its queues again"

# --- what the log says of a failure ------------------------------------------------------------


def test_a_dead_letter_s_log_line_names_the_error_s_class_and_where_it_was_raised_but_not_its_text(
        database, start_consumer, settings_for, broker, caplog):
    engine, url = database
    settings = settings_for("probe", url, retry_delays_seconds=DELAYS)
    bus.declare_consumer(settings, [probe.THING, probe.POISON])
    lookup, clinic_error = thing(1), thing(2, probe.POISON)

    def finds_no_appointment(uow, event):
        try:
            {}["appointment"]
        except KeyError as missing:
            raise LookupError(f"no appointment for {PATIENT} ({event.id})") from missing

    def not_found(uow, event):
        raise NotFound("no appointment with that id")

    with caplog.at_level(logging.INFO, logger="clinic.inbox"):
        start_consumer(engine, url, {probe.THING: finds_no_appointment, probe.POISON: not_found},
                       retry_delays_seconds=DELAYS)
        publish(settings, lookup, clinic_error)
        eventually(lambda: len(dead_letters(broker.url, settings)) == 2, message="both dead-lettered")

    dead = {event.id: [record for record in caplog.records
                       if event.id in record.getMessage() and record.levelno == logging.ERROR]
            for event in (lookup, clinic_error)}
    [failed] = dead[lookup.id]
    for shown in (caplog.text, OneLineFormatter("%(message)s").format(failed)):
        assert "Maria" not in shown
        assert "finds_no_appointment" in shown, "the traceback lost where it failed"
        assert "LookupError" in shown and "KeyError" in shown
    assert "after 2 attempts (LookupError)" in failed.getMessage()
    [refused] = dead[clinic_error.id]
    assert refused.exc_info is None, "a clinic error's failure is expected: no traceback"
    assert "clinic.errors.NotFound: no appointment with that id" in refused.getMessage()


# --- a broker of this module's own, to block and to freeze -------------------------------------


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory):
    """A RabbitMQ node for this module only, from the local packages."""
    server = LocalRabbitMQ(tmp_path_factory.mktemp("own-rabbitmq"))
    server.start()
    yield server
    server.stop()


# The module's own node has only its default account, guest, which publishes the probe's events there.
GUEST_PUBLISHES = (("probe", "guest"),)


def rabbitmqctl(server: LocalRabbitMQ, *args: str) -> str:
    env = {**os.environ, "HOME": str(server.base), "ERL_EPMD_PORT": str(server.epmd_port)}
    return subprocess.run([str(RABBITMQCTL), "-n", server.node, "-q", *args], env=env, check=True,
                          capture_output=True, text=True, timeout=60).stdout


def messages_in(server: LocalRabbitMQ, queue: str) -> int:
    """Ready and unacknowledged, as the node last counted them: a quorum queue's count is some seconds
    old (poll it)."""
    for line in rabbitmqctl(server, "list_queues", "name", "messages", "--no-table-headers").splitlines():
        name, _, count = line.rpartition("\t")
        if name == queue:
            return int(count)
    raise AssertionError(f"no queue {queue}")


@contextmanager
def disk_alarm(server: LocalRabbitMQ):
    """A resource alarm: no disk has 10,000 GB free. Restored to the node's limit afterwards."""
    rabbitmqctl(server, "set_disk_free_limit", "10000GB")
    try:
        yield
    finally:
        rabbitmqctl(server, "set_disk_free_limit", "50MB")


@contextmanager
def frozen(server: LocalRabbitMQ):
    """Every process of the node stopped: connections stay open and nothing answers."""
    os.killpg(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(server.process.pid, signal.SIGCONT)


def test_a_broker_blocked_by_a_resource_alarm_pauses_the_consumer_once_the_applied_acked_and_it_resumes(
        own_broker, database, start_consumer, settings_for, monkeypatch, caplog):
    engine, url = database
    # Heartbeats every second: a connection whose heartbeats went unanswered while blocked would be lost.
    changes = {"rabbitmq_url": own_broker.url, "broker_publishers": GUEST_PUBLISHES, "retry_delays_seconds": DELAYS,
               "batch_wait_seconds": 0.3,
               "broker_heartbeat_seconds": 1}
    settings = settings_for("probe", url, **changes)
    # A blocked connection timeout shorter than the alarm below: a consumer that gave up on a blocked
    # connection would have reconnected (and said so) within it.
    monkeypatch.setattr(bus, "BLOCKED_CONNECTION_TIMEOUT_SECONDS", 2)
    bus.declare_consumer(settings, probe.HANDLERS)
    good = [thing(n) for n in range(5)]
    poison = thing(99, probe.POISON)
    publish(settings, *good[:2], poison, *good[2:])

    with caplog.at_level(logging.INFO, logger="clinic.inbox"), disk_alarm(own_broker):
        running = start_consumer(engine, url, **changes)
        eventually(lambda: applied_sequences(engine) == [0, 1, 2, 3, 4], message="the good ones applied")
        # Acked while the alarm lasts: only the failing one waits, its retry unconfirmed.
        eventually(lambda: messages_in(own_broker, settings.queue) == 1, message="the applied ones acked")
        eventually(lambda: any("blocked by a resource alarm" in record.getMessage() for record in caplog.records),
                   message="the consumer saying it is blocked")
        blocked_at = time.monotonic()
        eventually(lambda: running.last_beat > blocked_at + 8, timeout=12,
                   message="beats while blocked, for longer than a blocked-connection timeout and heartbeat checks")
        assert messages_in(own_broker, settings.queue) == 1
    eventually(lambda: any("unblocked after" in record.getMessage() for record in caplog.records),
               message="the consumer saying it is unblocked")
    [(message_id, headers)] = eventually(lambda: dead_letters(own_broker.url, settings), timeout=15,
                                         message="the failing one dead-lettered after its retries")
    assert (message_id, headers[bus.ATTEMPTS_HEADER], headers[bus.REASON_HEADER]) == (poison.id, 2, "handler failed")
    eventually(lambda: messages_in(own_broker, settings.queue) == 0, message="the failing one acked")
    lines = [record.getMessage() for record in caplog.records if record.name == "clinic.inbox"]
    assert sum("blocked by a resource alarm" in line for line in lines) == 1
    assert sum("unblocked after" in line for line in lines) == 1
    assert not [line for line in lines if "consumer: the broker unavailable" in line or "back after" in line], lines
    assert sum(line.startswith("consumer: consuming") for line in lines) == 1, "the consumer reconnected"



def test_a_consumer_blocked_by_a_resource_alarm_stops_when_asked(own_broker, database, running, start_consumer,
                                                                 settings_for, caplog):
    engine, url = database
    changes = {"rabbitmq_url": own_broker.url, "broker_publishers": GUEST_PUBLISHES, "retry_delays_seconds": DELAYS}
    settings = settings_for("probe", url, **changes)
    bus.declare_consumer(settings, probe.HANDLERS)
    publish(settings, thing(1, probe.POISON))
    with caplog.at_level(logging.INFO, logger="clinic.inbox"), disk_alarm(own_broker):
        consumer = start_consumer(engine, url, **changes)
        eventually(lambda: any("blocked by a resource alarm" in record.getMessage() for record in caplog.records),
                   message="the consumer blocked")
        consumer.stop()
        # A graceful close waits for the broker to read the Connection.Close, which a blocked one does not.
        consumer_thread(running).join(timeout=5)
        assert not consumer_thread(running).is_alive(), "the consumer did not stop while blocked"
    # Once the alarm is over, the connection left behind is closed, and the message is back in its queue
    # (twice, if the retry it was publishing went through: consumers drop duplicates).
    eventually(lambda: not rabbitmqctl(own_broker, "list_connections", "name", "--no-table-headers").strip(),
               message="the blocked connection closed")
    eventually(lambda: messages_in(own_broker, settings.queue) >= 1, timeout=15, message="the message back")
    assert not dead_letters(own_broker.url, settings)

def test_a_broker_that_stops_answering_while_the_consumer_waits_for_a_confirm_does_not_stop_its_beat(
        own_broker, database, start_consumer, settings_for):
    engine, url = database
    changes = {"rabbitmq_url": own_broker.url, "broker_publishers": GUEST_PUBLISHES, "retry_delays_seconds": DELAYS}
    settings = settings_for("probe", url, **changes)
    bus.declare_consumer(settings, probe.HANDLERS)
    froze = threading.Event()
    tries = []

    def freezes_the_broker_then_fails(uow, event):
        tries.append(event.id)
        if len(tries) == 1:
            # The consumer's next step is to publish the retry and wait for its confirm.
            os.killpg(own_broker.process.pid, signal.SIGSTOP)
            froze.set()
        raise RuntimeError("not yet")

    running = start_consumer(engine, url, {probe.POISON: freezes_the_broker_then_fails}, **changes)
    try:
        publish(settings, thing(1, probe.POISON))
        assert froze.wait(10), "the handler did not run"
        frozen_at = time.monotonic()
        eventually(lambda: running.last_beat > frozen_at + 3, timeout=6, message="beats while the broker is frozen")
    finally:
        os.killpg(own_broker.process.pid, signal.SIGCONT)
    eventually(lambda: len(dead_letters(own_broker.url, settings)) == 1, timeout=20,
               message="the failing one dead-lettered after its retry, once the broker answers")
    assert len(tries) == 2


def test_a_broker_that_stops_answering_while_the_consumer_looks_at_the_unrouted_queue_does_not_stop_its_beat(
        own_broker, database, start_consumer, settings_for, monkeypatch):
    engine, url = database
    monkeypatch.setattr(inbox, "UNROUTED_EVERY_SECONDS", 0.2)
    running = start_consumer(engine, url, rabbitmq_url=own_broker.url, broker_publishers=GUEST_PUBLISHES)
    with frozen(own_broker):
        frozen_at = time.monotonic()
        eventually(lambda: running.last_beat > frozen_at + 3, timeout=6, message="beats while the broker is frozen")
    publish(settings_for("probe", url, rabbitmq_url=own_broker.url, broker_publishers=GUEST_PUBLISHES), thing(1))
    eventually(lambda: applied_sequences(engine) == [1], message="applied once the broker answers")
