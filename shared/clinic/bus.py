"""RabbitMQ: the topology every service shares, connections, and confirmed publishing.

Topology (names under the bus namespace, `clinic` by default):
  clinic.events      durable topic exchange all events are published to; its alternate
                     exchange is clinic.unrouted, so an event no queue is bound to yet is kept
  clinic.unrouted    fanout exchange and durable queue holding those events
  clinic.dead        direct exchange for dead letters, keyed by the consuming queue
  clinic.<service>   one durable quorum queue per consuming service, with a delivery limit
  clinic.<service>.dead  where that service's poison messages end

pika connections are not thread-safe: each thread makes its own Publisher or Consumer.
"""

from __future__ import annotations

import logging
import random
import time

import pika
import pika.exceptions as pe

from clinic.config import Settings

log = logging.getLogger(__name__)

# Everything that means "the broker connection is gone or unusable; reconnect and retry".
BROKER_ERRORS = (
    pe.AMQPConnectionError,
    pe.AMQPChannelError,
    pe.ChannelWrongStateError,
    pe.ConnectionWrongStateError,
    pe.StreamLostError,
    pe.NackError,
    pe.UnroutableError,
    OSError,
)


class Backoff:
    """Exponential backoff with jitter, capped."""

    def __init__(self, cap_seconds: float, first_seconds: float = 0.2):
        self.cap = cap_seconds
        self.first = first_seconds
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.first * (2 ** self.attempt))
        self.attempt += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0


class Outage:
    """Says once that something is away and once that it is back, however many retries lie between:
    a warning when the outage begins (with the first retry delay), an info line when it ends with how
    long it lasted, and nothing for each failed attempt in between (no traceback: it is expected)."""

    def __init__(self, logger: logging.Logger, what: str):
        self.log = logger
        self.what = what
        self.since: float | None = None

    def failed(self, exc: BaseException, delay: float) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning("%s unavailable (%s); retrying in %.1fs, then with growing delays", self.what, type(exc).__name__, delay)
        else:
            self.log.debug("%s still unavailable (%s); retrying in %.1fs", self.what, type(exc).__name__, delay)

    def recovered(self) -> None:
        if self.since is not None:
            self.log.info("%s back after %.1fs", self.what, time.monotonic() - self.since)
            self.since = None


def connection_parameters(settings: Settings) -> pika.URLParameters:
    params = pika.URLParameters(settings.rabbitmq_url)
    params.heartbeat = settings.broker_heartbeat_seconds
    params.blocked_connection_timeout = 30
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.client_properties = {"connection_name": f"{settings.service}"}
    return params


def connect(settings: Settings) -> pika.BlockingConnection:
    return pika.BlockingConnection(connection_parameters(settings))


def declare_exchanges(channel, settings: Settings) -> None:
    channel.exchange_declare(settings.unrouted_exchange, exchange_type="fanout", durable=True)
    channel.queue_declare(settings.unrouted_queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(settings.unrouted_queue, settings.unrouted_exchange)
    channel.exchange_declare(
        settings.exchange,
        exchange_type="topic",
        durable=True,
        arguments={"alternate-exchange": settings.unrouted_exchange},
    )
    channel.exchange_declare(settings.dead_letter_exchange, exchange_type="direct", durable=True)


def declare_service_queue(channel, settings: Settings, routing_keys) -> None:
    """The service's quorum queue, its dead-letter queue, and a binding per handled event type."""
    declare_exchanges(channel, settings)
    channel.queue_declare(settings.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(settings.dead_letter_queue, settings.dead_letter_exchange, routing_key=settings.queue)
    channel.queue_declare(
        settings.queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            # Quorum queues on RabbitMQ 3.10 set no limit by default: a poison message would loop forever.
            "x-delivery-limit": settings.delivery_limit,
            "x-dead-letter-exchange": settings.dead_letter_exchange,
            "x-dead-letter-routing-key": settings.queue,
        },
    )
    for key in routing_keys:
        channel.queue_bind(settings.queue, settings.exchange, routing_key=key)


def declare_consumer(settings: Settings, routing_keys) -> None:
    """Declare a consuming service's queue and its bindings ahead of its worker (when its service is
    migrated), so events published before the worker first runs wait in its queue, not in unrouted."""
    connection = connect(settings)
    try:
        declare_service_queue(connection.channel(), settings, sorted(routing_keys))
    finally:
        connection.close()


class Publisher:
    """One confirmed-publishing connection, for one thread."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.connection = connect(settings)
        self.channel = self.connection.channel()
        declare_exchanges(self.channel, settings)
        self.channel.confirm_delivery()

    def publish(self, routing_key: str, message_id: str, body: str | bytes, exchange: str | None = None,
                message_type: str | None = None) -> None:
        """Returns once the broker confirmed the message; raises a BROKER_ERRORS member otherwise."""
        self.channel.basic_publish(
            exchange=self.settings.exchange if exchange is None else exchange,
            routing_key=routing_key,
            body=body.encode() if isinstance(body, str) else body,
            properties=pika.BasicProperties(
                message_id=message_id,
                type=message_type or routing_key,
                content_type="application/json",
                delivery_mode=pika.DeliveryMode.Persistent,
            ),
        )

    def close(self) -> None:
        try:
            if self.connection.is_open:
                self.connection.close()
        except BROKER_ERRORS:
            pass


def broker_reachable(settings: Settings, timeout: float = 0.5) -> bool:
    """A cheap readiness check: the broker's AMQP port accepts a TCP connection."""
    import socket

    params = pika.URLParameters(settings.rabbitmq_url)
    try:
        with socket.create_connection((params.host, params.port), timeout=timeout):
            return True
    except OSError:
        return False
