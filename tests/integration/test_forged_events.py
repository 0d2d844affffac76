"""A consumer believes an event only when its routing key, AMQP type and body type agree and its
publisher (the user_id the broker checked) owns the event's prefix. Hand-crafted forgeries, on the
real RabbitMQ and PostgreSQL, published by real service accounts on an events exchange without topic
permissions (where only the consumer's check stands): each is dead-lettered with its reason and
changes nothing, and replaying the dead letters does not launder them."""

from __future__ import annotations

import logging

import pika
import sqlalchemy as sa

from clinic import bus, cli, events
from clinic.testing import eventually
from tests.integration.conftest import PROBE_ACCOUNT, queue_depth
from tests.support import probe
from tests.support.probe import registered, thing


def record_registration(uow, event) -> None:
    uow.connection.execute(probe.applied.insert().values(event_id=event.id, sequence=-1))


HANDLERS = {probe.THING: probe.record_thing, events.PATIENT_REGISTERED: record_registration}


def send(settings, routing_key: str, event: events.Event, message_type: str | None = None,
         user_id: str | None = "own", headers: dict | None = None, exchange: str | None = None) -> None:
    """Publish by hand on `settings`' account: user_id "own" is the account's own name, None none."""
    connection = bus.connect(settings)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            settings.exchange if exchange is None else exchange, routing_key, event.to_json().encode(),
            pika.BasicProperties(message_id=event.id, type=message_type or routing_key, delivery_mode=2, headers=headers,
                                 content_type="application/json",
                                 user_id=bus.broker_user(settings) if user_id == "own" else user_id),
            mandatory=True)
    finally:
        connection.close()


def applied_ids(engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(sa.select(probe.applied.c.event_id)).scalars())


def dead_reasons(settings) -> dict[str, str]:
    """{message id: reason} of the dead letters, left in place (unacked, on a connection then closed)."""
    connection = bus.connect(settings)
    try:
        seen = {}
        channel = connection.channel()
        for method, properties, _body in channel.consume(settings.dead_letter_queue, inactivity_timeout=0.5):
            if method is None:
                break
            seen[properties.message_id] = (properties.headers or {}).get(bus.REASON_HEADER)
        return seen
    finally:
        connection.close()


def test_forged_events_are_dead_lettered_and_change_nothing(probe_databases, start_consumer, settings_for, broker,
                                                            broker_channel, caplog):
    _, engine, (_, url) = probe_databases
    probe_settings = settings_for("probe", url)
    records, scheduling = settings_for("records", url), settings_for("scheduling", url)
    guest = probe_settings.with_changes(rabbitmq_url=broker.url)
    with caplog.at_level(logging.ERROR, logger="clinic.inbox"):
        start_consumer(engine, url, HANDLERS)
        forged = {
            # records' prefix, published by scheduling's account (the exchange has no topic permissions here)
            "scheduling publishes records.*": (scheduling, events.PATIENT_REGISTERED, registered(), {}),
            # the body says records.patient.registered, the routing key and AMQP type something else
            "body type differs": (records, probe.THING, registered(), {}),
            # the AMQP type differs from the routing key and the body
            "AMQP type differs": (probe_settings, probe.THING, thing(1), {"message_type": probe.POISON}),
            # claims the probe's account in the header the consumer writes on retries (not believed from the
            # events exchange): the broker says scheduling published it
            "publisher header forged": (scheduling, probe.THING, thing(2), {"headers": {bus.PUBLISHER_HEADER: PROBE_ACCOUNT}}),
            # no user_id at all (an account the broker did not name)
            "no user_id": (guest, probe.THING, thing(3), {"user_id": None, "headers": {bus.PUBLISHER_HEADER: PROBE_ACCOUNT}}),
        }
        for sender, routing_key, event, options in forged.values():
            send(sender, routing_key, event, **options)
        genuine = [registered(), thing(4)]
        send(records, events.PATIENT_REGISTERED, genuine[0])
        send(probe_settings, probe.THING, genuine[1])

        eventually(lambda: queue_depth(broker_channel, probe_settings.dead_letter_queue) == len(forged), timeout=15,
                   message="every forgery dead-lettered")
        eventually(lambda: applied_ids(engine) == {event.id for event in genuine}, message="the genuine events applied")
    reasons = dead_reasons(probe_settings)
    ids = {name: event.id for name, (_, _, event, _) in forged.items()}
    assert reasons[ids["scheduling publishes records.*"]] == "published by clinic-scheduling, which does not own records.*"
    assert reasons[ids["body type differs"]] == "routing key, AMQP type and body type differ"
    assert reasons[ids["AMQP type differs"]] == "routing key, AMQP type and body type differ"
    assert reasons[ids["publisher header forged"]] == "published by clinic-scheduling, which does not own probe.*"
    assert reasons[ids["no user_id"]] == "published by an account the broker did not name, which does not own probe.*"
    assert "Berg" not in caplog.text and probe.REGISTERED_PATIENT_ID not in caplog.text

    # Replaying them (as the operations account) keeps each one's publisher: refused again, still nothing applied.
    # The one whose publisher nothing vouches for stays where it is.
    eventually(lambda: queue_depth(broker_channel, probe_settings.dead_letter_queue) == len(forged),
               message="the dead letters back in place")
    replayed = cli.replay_dead_letters(cli.as_operator(probe_settings))
    assert replayed == len(forged) - 1
    eventually(lambda: queue_depth(broker_channel, probe_settings.dead_letter_queue) == len(forged), timeout=15,
               message="the replayed forgeries refused again")
    assert applied_ids(engine) == {event.id for event in genuine}


def test_a_dead_letter_planted_through_the_shared_dead_letter_exchange_is_not_replayed_as_its_claimed_publisher(
        probe_databases, start_consumer, settings_for, broker_channel):
    _, engine, (_, url) = probe_databases
    probe_settings = settings_for("probe", url)
    scheduling = settings_for("scheduling", url)
    start_consumer(engine, url, HANDLERS)
    planted = thing(7)
    # Every service may write to the shared dead-letter exchange (its queues dead-letter there): scheduling
    # plants a dead letter in the probe's queue, claiming the probe's account in the header.
    send(scheduling, probe_settings.queue, planted, message_type=probe.THING, exchange=probe_settings.dead_letter_exchange,
         headers={bus.PUBLISHER_HEADER: PROBE_ACCOUNT})
    assert queue_depth(broker_channel, probe_settings.dead_letter_queue) == 1

    # Only the user_id is believed there: replayed as scheduling's, and refused by the consumer.
    assert cli.replay_dead_letters(cli.as_operator(probe_settings)) == 1
    eventually(lambda: dead_reasons(probe_settings).get(planted.id)
               == "published by clinic-scheduling, which does not own probe.*", timeout=15, message="refused on replay")
    assert applied_ids(engine) == set()


def test_a_genuine_event_dead_lettered_by_its_handler_is_replayed_as_its_publisher_and_applied(
        probe_databases, start_consumer, settings_for, broker_channel):
    _, engine, (_, url) = probe_databases
    delays = (0.05,)
    probe_settings = settings_for("probe", url, retry_delays_seconds=delays)
    failing = {"yes": True}

    def until_fixed(uow, event):
        if failing["yes"]:
            raise LookupError("not yet")
        probe.record_thing(uow, event)

    start_consumer(engine, url, {probe.THING: until_fixed}, retry_delays_seconds=delays)
    event = thing(8)
    send(probe_settings, probe.THING, event)
    eventually(lambda: queue_depth(broker_channel, probe_settings.dead_letter_queue) == 1, timeout=15,
               message="dead-lettered after its retry")
    failing["yes"] = False
    assert cli.replay_dead_letters(cli.as_operator(probe_settings)) == 1
    eventually(lambda: applied_ids(engine) == {event.id}, timeout=15, message="applied after the replay")
