"""Seeing what a service publishes, as another service would: a private queue bound to its events."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pika

from clinic import bus
from clinic.config import Settings


@contextmanager
def listening(settings: Settings, routing_key: str) -> Iterator[Callable[[], list[tuple[str | None, bytes]]]]:
    """Bind a private queue to `routing_key` on the settings' exchange; the function given returns every
    message received so far as (AMQP message id, body), oldest first. On the test broker, as the
    clinic-tests account: a service's own may declare no queue but its own."""
    from clinic.testing.servers import as_observer

    settings = as_observer(settings)
    connection = pika.BlockingConnection(pika.URLParameters(settings.rabbitmq_url))
    try:
        channel = connection.channel()
        bus.declare_exchanges(channel, settings)
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, settings.exchange, routing_key=routing_key)
        seen: list[tuple[str | None, bytes]] = []

        def received() -> list[tuple[str | None, bytes]]:
            while True:
                method, properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    return list(seen)
                seen.append((properties.message_id, body))

        yield received
    finally:
        connection.close()
