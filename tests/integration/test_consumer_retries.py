"""Failed handlers wait before they are tried again, then end in the dead letters with their reason,
on the real RabbitMQ and PostgreSQL; an operator lists them page by page (the same pages every time,
in the order they died) and replays them with fresh attempts. Headers that no clinic process wrote
neither break the listing or the replay nor make a message retry for ever. A database outage pauses
the consumer without spending any attempt."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta, timezone

import pika
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from clinic import bus, cli, events
from clinic.testing import eventually
from tests.integration.conftest import PROBE_ACCOUNT, queue_depth
from tests.support import probe
from tests.support.probe import publish, thing

DELAYS = (0.3, 0.6)
CONTACT = {"patient_id": "0d9f7f0e-8f6c-4a53-9d33-5b1c1a0e4e21", "given_name": "Ida", "family_name": "Berg",
           "email": "ida.berg@example.org", "phone": None, "preferred_contact": "email", "email_opt_out": False}



def contact_changed() -> events.Event:
    return events.Event(type=events.PATIENT_CONTACT_CHANGED, producer="records",
                        data=events.serialise_payload(events.PATIENT_CONTACT_CHANGED, CONTACT))


def sample(name: str, event_type: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": "probe", "event_type": event_type}) or 0.0


def applied_sequences(engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(probe.applied.c.sequence).order_by(probe.applied.c.row)).scalars())


def test_a_handler_that_fails_twice_then_succeeds_is_applied_once_after_the_delays(
        probe_databases, start_consumer, settings_for, broker_channel):
    _, consumer, (_, url) = probe_databases
    settings = settings_for("probe", url, retry_delays_seconds=DELAYS)
    tried_at = []

    def flaky(uow, event):
        tried_at.append(time.monotonic())
        if len(tried_at) <= 2:
            raise LookupError("the appointment is not there yet")
        probe.record_thing(uow, event)

    retried_before = sample("clinic_messages_retried_total", probe.THING)
    applied_before = sample("clinic_messages_applied_total", probe.THING)
    start_consumer(consumer, url, {probe.THING: flaky}, retry_delays_seconds=DELAYS)
    publish(settings, thing(5))

    eventually(lambda: applied_sequences(consumer) == [5], timeout=15, message="the event applied on its third attempt")
    assert len(tried_at) == 3
    assert tried_at[1] - tried_at[0] >= DELAYS[0] and tried_at[2] - tried_at[1] >= DELAYS[1], "tried again too soon"
    assert sample("clinic_messages_retried_total", probe.THING) - retried_before == 2
    assert sample("clinic_messages_applied_total", probe.THING) - applied_before == 1
    assert queue_depth(broker_channel, settings.dead_letter_queue) == 0
    assert queue_depth(broker_channel, settings.queue) == 0


def test_a_retried_failure_logs_one_line_each_time_and_the_dead_letter_one_traceback(
        probe_databases, start_consumer, settings_for, broker_channel, caplog):
    _, consumer, (_, url) = probe_databases
    settings = settings_for("probe", url, retry_delays_seconds=(0.05, 0.1))
    poison = events.Event(type=probe.POISON, data={"sequence": 0}, producer="probe")
    with caplog.at_level(logging.INFO, logger="clinic.inbox"):
        start_consumer(consumer, url, retry_delays_seconds=(0.05, 0.1))
        publish(settings, poison)
        eventually(lambda: queue_depth(broker_channel, settings.dead_letter_queue) == 1, message="dead-lettered")
    mine = [record for record in caplog.records if poison.id in record.getMessage()]
    retries = [record for record in mine if record.levelno == logging.WARNING]
    assert [record.getMessage().split(" failed on attempt ")[1][:1] for record in retries] == ["1", "2"]
    assert all(record.exc_info is None and "RuntimeError" in record.getMessage() for record in retries)
    dead = [record for record in mine if record.levelno == logging.ERROR]
    assert len(dead) == 1 and dead[0].exc_info is not None and "after 3 attempts" in dead[0].getMessage()


def test_dead_letters_are_listed_page_by_page_with_their_reason_and_without_patient_data(
        probe_databases, start_consumer, settings_for, broker_channel, capsys):
    _, consumer, (_, url) = probe_databases
    settings = settings_for("probe", url, retry_delays_seconds=(0.05,))

    def refuses(uow, event):
        # As a database error would, the text quotes what it could not store.
        raise ValueError(f"cannot store {event.data['email']} for {event.data['family_name']}")

    start_consumer(consumer, url, {events.PATIENT_CONTACT_CHANGED: refuses}, retry_delays_seconds=(0.05,))
    sent = [contact_changed() for _ in range(5)]
    publish(settings_for("records", url), *sent)   # records' events, published by records' account
    eventually(lambda: queue_depth(broker_channel, settings.dead_letter_queue) == 5, timeout=15, message="five dead letters")
    capsys.readouterr()

    pages = [cli.list_dead_letters(settings, page, per_page=2) for page in (1, 2, 3, 4)]
    output = capsys.readouterr().out
    assert [len(rows) for rows in pages] == [2, 2, 1, 0]
    listed = [row for rows in pages for row in rows]
    assert sorted(row["id"] for row in listed) == sorted(event.id for event in sent), "pages overlap or skip"
    assert [(row["when"], row["id"]) for row in listed] == sorted((row["when"], row["id"]) for row in listed), \
        "not in the order they died, then by id"
    row = pages[0][0]
    assert row["type"] == row["routing_key"] == events.PATIENT_CONTACT_CHANGED
    assert row["attempts"] == 2 and row["reason"] == "handler failed" and row["exception"] == "ValueError"
    assert row["message"].startswith("ValueError") and row["when"].endswith("+00:00")
    assert "5 dead letter(s)" in output and "page 3 of 3" in output and "exception=ValueError" in output
    assert "page 4 is past the end: 3 page(s) of 2" in output
    for value in ("ida.berg", "Berg", "Ida"):
        assert value not in output, f"{value} shown in the dead-letter list"
    assert queue_depth(broker_channel, settings.dead_letter_queue) == 5, "listing took messages away"


# --- listing and replaying, with dead letters put there directly ----------------------------------


DIED = ("2030-01-07T14:00:00+00:00", "2030-01-07T14:00:01+00:00", "2030-01-07T14:00:02+00:00")


def put_dead_letter(channel, settings, message_id: str | None, headers: dict, body: bytes | None = None,
                    routing_key: str = probe.THING, exchange: str | None = None) -> None:
    """A message in the service's dead letters: by default one as the consumer sends it there (through
    the retry exchange, step "dead"); with exchange="" straight into the queue, headers as given."""
    if exchange is None:
        exchange = bus.retry_exchange(settings)
        headers = {bus.QUEUE_HEADER: settings.queue, bus.STEP_HEADER: bus.DEAD_STEP,
                   bus.PUBLISHER_HEADER: PROBE_ACCOUNT, **headers}
    else:
        routing_key = settings.dead_letter_queue
    channel.basic_publish(exchange, routing_key, body if body is not None else thing(1).to_json().encode(),
                          pika.BasicProperties(message_id=message_id, type=probe.THING, headers=headers, delivery_mode=2,
                                               user_id=PROBE_ACCOUNT))


def died(when: str, attempts: int = 3) -> dict:
    return {bus.REASON_HEADER: "handler failed", bus.EXCEPTION_HEADER: "RuntimeError", bus.ERROR_HEADER: "RuntimeError (…)",
            bus.ATTEMPTS_HEADER: attempts, bus.DEAD_AT_HEADER: when}


@pytest.fixture
def dead_letters(settings_for, broker_channel):
    """Settings for "records" on the test broker, its queues declared (no consumer runs)."""
    settings = settings_for("records", "sqlite://")
    bus.declare_consumer(settings, [probe.THING])
    broker_channel.confirm_delivery()
    return settings


def test_pages_are_the_same_every_time_in_the_order_the_messages_died_then_by_id(dead_letters, broker_channel, capsys):
    settings = dead_letters
    # Published in an order that is neither: a page must not depend on where the queue keeps each message.
    sent = [(DIED[(n * 7) % 3], str(uuid.uuid4())) for n in range(30)]
    for when, message_id in sent:
        put_dead_letter(broker_channel, settings, message_id, died(when))
    expected = [message_id for _, message_id in sorted(sent)]

    for _ in range(2):
        pages = [[row["id"] for row in cli.list_dead_letters(settings, page, per_page=7)] for page in range(1, 7)]
        assert [len(rows) for rows in pages] == [7, 7, 7, 7, 2, 0]
        assert [message_id for rows in pages for message_id in rows] == expected
    assert "page 6 is past the end: 5 page(s) of 7" in capsys.readouterr().out
    assert queue_depth(broker_channel, settings.dead_letter_queue) == 30


def test_a_listing_says_when_it_read_only_part_of_the_queue(dead_letters, broker_channel, monkeypatch, capsys):
    settings = dead_letters
    monkeypatch.setattr(cli, "READ_AT_MOST", 4)
    for n in range(6):
        put_dead_letter(broker_channel, settings, f"m-{n}", died(DIED[0]))
    rows = cli.list_dead_letters(settings, 1, per_page=10)
    assert len(rows) == 4
    assert "6 dead letter(s) in " in capsys.readouterr().out.replace(f"{settings.dead_letter_queue}: only the first 4 read", "")
    assert queue_depth(broker_channel, settings.dead_letter_queue) == 6


def test_a_dead_letter_of_the_delivery_limit_says_so_and_counts_its_retries_not_its_last_trip(settings_for, broker_channel):
    # Dead-lettered by the broker after a worker crashed on it, on its way back from a delay queue:
    # it still carries that trip's headers, which say nothing about why it is dead.
    settings = settings_for("records", "sqlite://", delivery_limit=1)
    bus.declare_consumer(settings, [probe.THING])
    expiry = {"queue": bus.delay_queue(settings, 1000), "reason": "expired", "count": 2, "exchange": bus.retry_exchange(settings),
              "routing-keys": [probe.THING], "time": datetime(2030, 1, 7, 14, tzinfo=timezone.utc)}
    last_trip = {bus.QUEUE_HEADER: settings.queue, bus.STEP_HEADER: "1000", bus.REASON_HEADER: "handler failed",
                 bus.EXCEPTION_HEADER: "Stale", bus.ATTEMPTS_HEADER: 99, "x-death": [expiry]}
    event = thing(4)
    broker_channel.basic_publish(settings.exchange, probe.THING, event.to_json(),
                                 pika.BasicProperties(message_id=event.id, type=probe.THING, headers=last_trip, delivery_mode=2,
                                                      user_id=PROBE_ACCOUNT))

    def crash_on_it():
        method, _, _ = broker_channel.basic_get(settings.queue)
        if method is not None:
            broker_channel.basic_nack(method.delivery_tag, requeue=True)
        return queue_depth(broker_channel, settings.dead_letter_queue) == 1

    eventually(crash_on_it, message="the delivery limit's dead letter")
    for _ in range(2):   # listing counts as a delivery; the attempts shown do not change
        [row] = cli.list_dead_letters(settings)
        assert (row["id"], row["routing_key"], row["reason"], row["attempts"]) == (event.id, probe.THING, "delivery_limit", 3)
        assert row["exception"] is None and row["message"] is None
        assert row["when"] is not None and not row["when"].startswith("2030")


def test_odd_dead_letters_are_listed_and_replayed_by_the_clinic_command(dead_letters, broker_channel, monkeypatch, capsys):
    settings = dead_letters
    delay_queue = bus.delay_queue(settings, 1000)
    odd = {
        "x-death not a list": ({"x-death": "junk"}, ""),
        "x-death of strangers": ({"x-death": [1, "x", {"queue": settings.queue, "reason": "delivery_limit", "count": "abc",
                                                       "routing-keys": "abc"},
                                              {"queue": delay_queue, "reason": "expired", "count": "many"}]}, ""),
        "trip headers of odd types": ({bus.ATTEMPTS_HEADER: "many", bus.DEAD_AT_HEADER: 12345, bus.EXCEPTION_HEADER: 7}, None),
        "odd marks and keys": ({bus.REPLAYED_AFTER_HEADER: "abc",
                                "x-death": [{"queue": settings.queue, "reason": "delivery_limit", "count": -4,
                                             "routing-keys": ["x" * 300]}]}, ""),
        "good": (died(DIED[1]), None),
    }
    for message_id, (headers, exchange) in odd.items():
        put_dead_letter(broker_channel, settings, message_id, headers, exchange=exchange)
    put_dead_letter(broker_channel, settings, None, died(DIED[0]), body=b"{ not json")
    monkeypatch.setenv("RABBITMQ_URL", settings.rabbitmq_url)
    monkeypatch.setenv("CLINIC_BUS_NAMESPACE", settings.bus_namespace)
    # A replay publishes as each message's publisher: the operations account's
    monkeypatch.setenv("CLINIC_OPERATOR_RABBITMQ_URL", settings.operator_rabbitmq_url)
    capsys.readouterr()

    assert cli.main(["dead-letters", "list", "records"]) == 0
    out = capsys.readouterr().out
    assert "6 dead letter(s)" in out
    assert all(f'id="{message_id}"' in out or f"id={message_id}" in out for message_id in odd), out
    assert "attempts=many" not in out

    assert cli.main(["dead-letters", "replay", "records"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"replayed 6 message(s) to {settings.queue}\n", captured.err
    assert queue_depth(broker_channel, settings.dead_letter_queue) == 0
    assert queue_depth(broker_channel, settings.queue) == 6


def test_a_dead_letter_that_cannot_be_sent_back_is_skipped_with_a_line_and_the_rest_replayed(
        dead_letters, broker_channel, monkeypatch, capsys):
    settings = dead_letters
    for message_id in ("first", "odd", "last"):
        put_dead_letter(broker_channel, settings, message_id, died(DIED[0]))
    original = bus.forwarded

    def fails_for_odd(properties, **headers):
        if properties.message_id == "odd":
            raise ValueError("as a header no client could have meant")
        return original(properties, **headers)

    monkeypatch.setattr(bus, "forwarded", fails_for_odd)
    assert cli.replay_dead_letters(cli.as_operator(settings)) == 2
    assert capsys.readouterr().err == "clinic: dead letter odd skipped: it cannot be sent back as it is (ValueError)\n"
    eventually(lambda: queue_depth(broker_channel, settings.dead_letter_queue) == 1, message="the skipped one left in place")
    [row] = cli.list_dead_letters(settings)
    assert row["id"] == "odd"
    assert queue_depth(broker_channel, settings.queue) == 2


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_a_replay_limit_below_one_is_refused(limit, capsys):
    with pytest.raises(SystemExit) as refused:
        cli.main(["dead-letters", "replay", "records", "--limit", limit])
    assert refused.value.code == 2
    assert "must be 1 or more" in capsys.readouterr().err


def test_unrouted_events_are_listed_in_the_order_they_occurred_then_by_id(settings_for, capsys):
    settings = settings_for("probe", "sqlite://")
    start = datetime(2030, 1, 7, 14, tzinfo=timezone.utc)
    sent = [events.Event(type=probe.UNHEARD, data={"sequence": n}, producer="probe", occurred_at=start + timedelta(seconds=(n * 5) % 7))
            for n in range(12)]
    publish(settings, *sent)   # no queue is bound to these
    expected = [event.id for event in sorted(sent, key=lambda event: (event.occurred_at, event.id))]
    for _ in range(2):
        pages = [[row["id"] for row in cli.list_unrouted(settings, page, per_page=5)] for page in (1, 2, 3)]
        assert [message_id for rows in pages for message_id in rows] == expected
    assert "12 unrouted event(s)" in capsys.readouterr().out


def test_odd_headers_never_make_a_failing_event_retry_for_ever(probe_databases, start_consumer, settings_for, broker_channel):
    _, consumer, (_, url) = probe_databases
    delays = (0.05, 0.1)
    settings = settings_for("probe", url, retry_delays_seconds=delays)
    start_consumer(consumer, url, retry_delays_seconds=delays)
    first_delay = bus.delay_queue(settings, bus.delay_milliseconds(delays[0]))
    odd = [
        # No replay wrote this: taken at its word, the message's attempts would stay at 0.
        {bus.REPLAYED_AFTER_HEADER: 1_000_000},
        {bus.REPLAYED_AFTER_HEADER: "abc", "x-death": "junk"},
        # A count the broker would go on adding one to, from -1000.
        {"x-death": [{"queue": first_delay, "reason": "expired", "count": -1000, "exchange": "", "routing-keys": [probe.POISON]}]},
    ]
    sent = []
    for headers in odd:
        event = events.Event(type=probe.POISON, data={"sequence": len(sent)}, producer="probe")
        broker_channel.basic_publish(settings.exchange, probe.POISON, event.to_json(),
                                     pika.BasicProperties(message_id=event.id, type=probe.POISON, headers=headers,
                                                          delivery_mode=2, user_id=PROBE_ACCOUNT))
        sent.append(event.id)
    eventually(lambda: queue_depth(broker_channel, settings.dead_letter_queue) == 3, timeout=20,
               message="each dead-lettered after its retries")
    rows = cli.list_dead_letters(settings)
    assert sorted(row["id"] for row in rows) == sorted(sent)
    assert {row["attempts"] for row in rows} == {len(delays) + 1}


def test_a_page_of_more_than_200_is_refused(capsys):
    with pytest.raises(SystemExit) as refused:
        cli.main(["dead-letters", "list", "records", "--per-page", "201"])
    assert refused.value.code == 2
    assert "between 1 and 200" in capsys.readouterr().err


def test_a_replayed_dead_letter_gets_fresh_attempts_and_its_routing_key_and_applies_once_fixed(
        probe_databases, start_consumer, settings_for, broker_channel):
    _, consumer, (_, url) = probe_databases
    delays = (0.05, 0.1)
    settings = settings_for("probe", url, retry_delays_seconds=delays)
    fixed = []

    def until_fixed(uow, event):
        if not fixed:
            raise RuntimeError("still broken")
        probe.record_thing(uow, event)

    start_consumer(consumer, url, {probe.THING: until_fixed}, retry_delays_seconds=delays)
    event = thing(3)
    publish(settings, event)
    eventually(lambda: queue_depth(broker_channel, settings.dead_letter_queue) == 1, message="dead-lettered")
    retried = sample("clinic_messages_retried_total", probe.THING)

    assert cli.replay_dead_letters(settings) == 1
    eventually(lambda: sample("clinic_messages_retried_total", probe.THING) - retried == 2, timeout=15,
               message="both retries again after the replay")
    eventually(lambda: queue_depth(broker_channel, settings.dead_letter_queue) == 1, message="dead again")
    [row] = cli.list_dead_letters(settings)
    assert (row["id"], row["routing_key"], row["attempts"]) == (event.id, probe.THING, 3)

    fixed.append(True)
    assert cli.replay_dead_letters(settings) == 1
    eventually(lambda: applied_sequences(consumer) == [3], message="applied once fixed")
    assert queue_depth(broker_channel, settings.dead_letter_queue) == 0


def test_a_database_outage_pauses_the_consumer_without_spending_attempts_and_logs_it_once(
        postgres, probe_databases, start_consumer, settings_for, broker_channel, caplog):
    _, consumer, (_, url) = probe_databases
    settings = settings_for("probe", url, retry_delays_seconds=(0.05,))
    retried = sample("clinic_messages_retried_total", probe.THING)
    with caplog.at_level(logging.INFO, logger="clinic.inbox"):
        running = start_consumer(consumer, url, retry_delays_seconds=(0.05,))
        postgres.stop_server()
        try:
            publish(settings, thing(1))
            eventually(lambda: queue_depth(broker_channel, settings.queue) == 0, message="the consumer to hold the message")
            down_at = time.monotonic()
            eventually(lambda: running.last_beat > down_at + 2, timeout=6, message="beats while the database is away")
        finally:
            postgres.start_server()
        eventually(lambda: applied_sequences(consumer) == [1], timeout=30, message="the event applied after the outage")
    assert sample("clinic_messages_retried_total", probe.THING) == retried, "the outage spent an attempt"
    assert queue_depth(broker_channel, settings.dead_letter_queue) == 0
    outage = [record for record in caplog.records if "consumer: the database" in record.getMessage()]
    assert [record.levelno for record in outage] == [logging.WARNING, logging.INFO]
    assert all(record.exc_info is None for record in outage)
