"""Each service's broker account, on the real RabbitMQ: it declares everything it needs, publishes only
its own prefix (topic permissions, as deploy sets them on the events exchange), cannot publish as
another account, cannot touch another service's queues or its retry and requeue exchanges; and only
the operations account replays a message as its original publisher."""

from __future__ import annotations

import importlib

import pika
import pika.exceptions as pe
import pytest

from clinic import bus, cli, events
from clinic.config import SERVICES
from clinic.testing import eventually
from tests.integration.conftest import queue_depth
from tests.support.probe import registered


@pytest.fixture
def restricted(broker, bus_namespace, settings_for):
    """This test's events exchange with the topic permissions deploy gives clinic.events."""
    broker.restrict_topics(settings_for("records", "sqlite://"))


def channel_of(settings) -> tuple[pika.BlockingConnection, object]:
    connection = bus.connect(settings)
    channel = connection.channel()
    channel.confirm_delivery()
    return connection, channel


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_declares_its_whole_topology_with_its_own_account(service, settings_for, broker_channel):
    settings = settings_for(service, "sqlite://")
    consumed = importlib.import_module(f"{service}.worker").handlers(settings)
    if consumed:
        bus.declare_consumer(settings, consumed)
        assert queue_depth(broker_channel, settings.queue) == 0
    bus.Publisher(settings).close()   # the exchanges and the unrouted queue
    assert queue_depth(broker_channel, settings.unrouted_queue) == 0


def test_a_service_publishing_another_services_event_is_refused_by_the_broker(restricted, settings_for, broker_channel):
    scheduling, records = settings_for("scheduling", "sqlite://"), settings_for("records", "sqlite://")
    event = registered()
    publisher = bus.Publisher(scheduling)
    try:
        with pytest.raises(pe.ChannelClosedByBroker) as refused:
            publisher.publish(event.type, event.id, event.to_json())
    finally:
        publisher.close()
    assert refused.value.reply_code == 403 and "topic" in refused.value.reply_text
    assert queue_depth(broker_channel, scheduling.unrouted_queue) == 0, "the refused event was kept"

    publisher = bus.Publisher(records)   # the owner of records.* publishes it
    try:
        publisher.publish(event.type, event.id, event.to_json())
    finally:
        publisher.close()
    assert queue_depth(broker_channel, records.unrouted_queue) == 1


def test_a_service_cannot_publish_as_another_account(settings_for, broker_channel):
    scheduling = settings_for("scheduling", "sqlite://")
    event = registered()
    publisher = bus.Publisher(scheduling)
    try:
        with pytest.raises(pe.ChannelClosedByBroker) as refused:
            publisher.publish(event.type, event.id, event.to_json(), user_id="clinic-records")
    finally:
        publisher.close()
    assert refused.value.reply_code == 406 and "user_id" in refused.value.reply_text
    assert queue_depth(broker_channel, scheduling.unrouted_queue) == 0


def test_a_service_cannot_touch_another_services_queue_nor_its_retry_and_requeue_exchanges(settings_for):
    notifications = settings_for("notifications", "sqlite://")
    bus.declare_consumer(notifications, importlib.import_module("notifications.worker").handlers(notifications))
    scheduling = settings_for("scheduling", "sqlite://")
    attempts = {
        "consume notifications' queue": lambda channel: channel.basic_get(notifications.queue),
        "publish to notifications' requeue exchange":
            lambda channel: channel.basic_publish(bus.requeue_exchange(notifications), events.PATIENT_REGISTERED, b"{}",
                                                  pika.BasicProperties(headers={bus.QUEUE_HEADER: notifications.queue})),
        "publish to notifications' retry exchange":
            lambda channel: channel.basic_publish(bus.retry_exchange(notifications), events.PATIENT_REGISTERED, b"{}"),
        "publish straight into notifications' queue":
            lambda channel: channel.basic_publish("", notifications.queue, b"{}"),
        "delete notifications' queue": lambda channel: channel.queue_delete(notifications.queue),
    }
    for what, attempt in attempts.items():
        connection, channel = channel_of(scheduling)
        try:
            with pytest.raises(pe.ChannelClosedByBroker) as refused:
                attempt(channel)
            assert refused.value.reply_code == 403, what
        finally:
            if connection.is_open:
                connection.close()


def _unrouted_registration(records):
    """A patient registration published by records before any queue is bound to it."""
    event = registered()
    publisher = bus.Publisher(records)
    try:
        publisher.publish(event.type, event.id, event.to_json())
    finally:
        publisher.close()
    return event


def test_only_the_operations_account_replays_an_unrouted_event_keeping_its_key_and_publisher(
        settings_for, broker_channel):
    records = settings_for("records", "sqlite://")
    event = _unrouted_registration(records)
    assert queue_depth(broker_channel, records.unrouted_queue) == 1
    scheduling = settings_for("scheduling", "sqlite://")
    bus.declare_consumer(scheduling, [event.type])   # a queue bound since the event was published

    with pytest.raises(pe.ChannelClosedByBroker) as refused:
        cli.replay_unrouted(scheduling)   # scheduling's own account may not publish as records
    assert "CLINIC_OPERATOR_RABBITMQ_URL" in cli._broker_trouble(refused.value)
    eventually(lambda: queue_depth(broker_channel, records.unrouted_queue) == 1, message="the event back in unrouted")

    assert cli.replay_unrouted(cli.as_operator(scheduling)) == 1
    method, properties, body = eventually(lambda: _got(broker_channel, scheduling.queue), message="the replayed event")
    assert method.routing_key == event.type, "replayed under another routing key"
    assert properties.user_id == "clinic-records" and properties.type == event.type
    assert events.parse(body).id == event.id
    assert queue_depth(broker_channel, records.unrouted_queue) == 0


def test_the_clinic_command_replays_as_the_operations_account_when_it_is_configured(settings_for, broker_channel,
                                                                                      monkeypatch, capsys):
    records = settings_for("records", "sqlite://")
    event = _unrouted_registration(records)
    scheduling = settings_for("scheduling", "sqlite://")
    bus.declare_consumer(scheduling, [event.type])
    monkeypatch.setenv("RABBITMQ_URL", scheduling.rabbitmq_url)
    monkeypatch.setenv("CLINIC_BUS_NAMESPACE", scheduling.bus_namespace)
    assert cli.main(["unrouted", "replay"]) == 1
    assert "CLINIC_OPERATOR_RABBITMQ_URL" in capsys.readouterr().err

    monkeypatch.setenv("CLINIC_OPERATOR_RABBITMQ_URL", scheduling.operator_rabbitmq_url)
    assert cli.main(["unrouted", "replay"]) == 0
    method, properties, _body = eventually(lambda: _got(broker_channel, scheduling.queue), message="the replayed event")
    assert method.routing_key == event.type and method.exchange == scheduling.exchange
    assert properties.user_id == "clinic-records", "replayed as someone else than its publisher"


def _got(channel, queue: str):
    method, properties, body = channel.basic_get(queue, auto_ack=True)
    return (method, properties, body) if method is not None else None
