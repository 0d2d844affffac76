"""What a queue holds and who consumes it, as the broker tells anyone who asks by name (a passive
declaration): the tests' way to see that a consumer is there, or that what was published waits."""

from __future__ import annotations

from typing import NamedTuple

import pika
from pika.adapters.blocking_connection import BlockingChannel


class QueueState(NamedTuple):
    # A message a consumer holds unacknowledged is in neither: only the management API counts those.
    ready: int
    consumers: int


def declared_state(channel: BlockingChannel, queue: str) -> QueueState:
    """The queue's state; a queue that does not exist closes the channel (ChannelClosedByBroker, 404)."""
    method = channel.queue_declare(queue, passive=True).method
    return QueueState(method.message_count, method.consumer_count)


def queue_state(rabbitmq_url: str, queue: str, *, must_exist: bool = False) -> QueueState:
    """(messages ready, consumers) of a queue, on a connection of its own; (0, 0) while the queue does
    not exist (a consumer declares it when it first starts), unless `must_exist`."""
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        return declared_state(connection.channel(), queue)
    except pika.exceptions.ChannelClosedByBroker as exc:
        # Only "no such queue" means empty: an account refused the queue must not read as one.
        if must_exist or exc.reply_code != pika.spec.NOT_FOUND:
            raise
        return QueueState(0, 0)
    finally:
        if connection.is_open:
            connection.close()
