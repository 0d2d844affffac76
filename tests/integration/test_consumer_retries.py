"""Failed handlers wait before they are tried again, then end in the dead letters with their reason,
on the real RabbitMQ and PostgreSQL; an operator lists them page by page and replays them with
fresh attempts. A database outage pauses the consumer without spending any attempt."""

from __future__ import annotations

import logging
import time

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from clinic import bus, cli, events
from clinic.testing import eventually
from tests.integration.conftest import queue_depth
from tests.support import probe

DELAYS = (0.3, 0.6)
CONTACT = {"patient_id": "0d9f7f0e-8f6c-4a53-9d33-5b1c1a0e4e21", "given_name": "Ida", "family_name": "Berg",
           "email": "ida.berg@example.org", "phone": None, "preferred_contact": "email", "email_opt_out": False}


def publish(settings, *sent: events.Event) -> None:
    publisher = bus.Publisher(settings)
    try:
        for event in sent:
            publisher.publish(event.type, event.id, event.to_json())
    finally:
        publisher.close()


def thing(sequence: int) -> events.Event:
    return events.Event(type=probe.THING, data={"sequence": sequence}, producer="probe")


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
    publish(settings, *sent)
    eventually(lambda: queue_depth(broker_channel, settings.dead_letter_queue) == 5, timeout=15, message="five dead letters")
    capsys.readouterr()

    pages = [cli.list_dead_letters(settings, page, per_page=2) for page in (1, 2, 3, 4)]
    output = capsys.readouterr().out
    assert [len(rows) for rows in pages] == [2, 2, 1, 0]
    assert [row["id"] for rows in pages for row in rows] == [event.id for event in sent], "pages overlap or skip"
    row = pages[0][0]
    assert row["type"] == row["routing_key"] == events.PATIENT_CONTACT_CHANGED
    assert row["attempts"] == 2 and row["reason"] == "handler failed" and row["exception"] == "ValueError"
    assert row["message"].startswith("ValueError") and row["when"].endswith("+00:00")
    assert "5 dead letter(s)" in output and "page 3 of 3" in output and "exception=ValueError" in output
    for value in ("ida.berg", "Berg", "Ida"):
        assert value not in output, f"{value} shown in the dead-letter list"
    assert queue_depth(broker_channel, settings.dead_letter_queue) == 5, "listing took messages away"


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
