"""Publishing with confirms pipelined: many messages in flight on one channel, each confirmed when the broker has it.

clinic.bus.Publisher waits for each confirm before it sends the next message, one round trip per
message. The outbox relay needs more: it keeps up to a window of messages outstanding and learns,
as the broker answers, which it took (Basic.Ack) and which it refused (Basic.Nack).

This is pika's SelectConnection, driven by the thread that made it (pika connections are not
thread-safe): `publish` hands a message to the connection, and `wait` runs the connection's I/O loop
until a confirm arrives or the time is up. Only while `wait` runs does the connection write, read
and answer heartbeats, so its caller waits through it rather than sleeping.

Each message is published under a key of the caller's choosing (the relay uses the outbox
position); the caller takes back the keys confirmed, the keys refused, and, once the connection is
lost, the keys never confirmed either way (the broker may or may not have them: send them again).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Hashable

import pika
import pika.exceptions as pe

from clinic import bus
from clinic.config import Settings

log = logging.getLogger(__name__)

# How long opening the connection and its confirming channel may take before it counts as failed.
OPEN_TIMEOUT_SECONDS = 15.0


class ConfirmingPublisher:
    """One connection and one channel in confirm mode, for one thread; messages in order on that channel."""

    def __init__(self, settings: Settings, open_timeout: float = OPEN_TIMEOUT_SECONDS):
        """Connect, declare the events exchange (as clinic.bus.Publisher does) and turn confirms on;
        raises a clinic.bus.BROKER_ERRORS member when the broker cannot be had."""
        self.settings = settings
        self.user = bus.broker_user(settings)   # every message's user_id, which the broker checks
        self._released = False
        self._in_flight: OrderedDict[int, Hashable] = OrderedDict()   # delivery tag -> key, oldest first
        self._confirmed: list[Hashable] = []
        self._refused: list[Hashable] = []
        self._last_tag = 0
        self._lost: BaseException | None = None
        self._ready = False
        self._answered = False
        self.blocked = False   # the broker said it stops reading from us (a memory or disk alarm)
        self.channel = None
        # The topology through the same code every publisher uses, so its arguments never disagree.
        with bus.connect(settings) as connection:
            bus.declare_exchanges(connection.channel(), settings)
        self.connection = pika.SelectConnection(
            bus.connection_parameters(settings),
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_lost,
            on_close_callback=self._on_lost,
        )
        self.connection.add_on_connection_blocked_callback(self._on_blocked)
        self.connection.add_on_connection_unblocked_callback(self._on_unblocked)
        try:
            deadline = time.monotonic() + open_timeout
            while not self._ready:
                self._raise_if_lost()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise pe.AMQPConnectionError("the broker did not open a confirming channel in time")
                self._run_loop(left)
        except BaseException:
            self.close()   # a failed attempt must not leave its socket and I/O loop behind
            raise

    # --- what the caller does ------------------------------------------------------------------

    def publish(self, key: Hashable, routing_key: str, message_id: str, body: str | bytes,
                exchange: str | None = None, message_type: str | None = None) -> None:
        """Send one persistent message; its confirm comes back later under `key` (see wait)."""
        self._raise_if_lost()
        self.channel.basic_publish(
            exchange=self.settings.exchange if exchange is None else exchange,
            routing_key=routing_key,
            body=body.encode() if isinstance(body, str) else body,
            properties=bus.event_properties(message_id, routing_key, message_type, self.user),
        )
        # The broker numbers a confirming channel's publishes 1, 2, 3, ...: the confirm names that number.
        self._last_tag += 1
        self._in_flight[self._last_tag] = key

    def wait(self, seconds: float) -> None:
        """Send what is queued and take in the broker's answers until a confirm arrives or `seconds`
        pass (0: only what is ready now); raises a BROKER_ERRORS member once the connection is lost."""
        self._raise_if_lost()
        self._answered = False
        self._run_loop(seconds)
        self._raise_if_lost()

    @property
    def in_flight(self) -> int:
        """Messages published and not yet confirmed or refused."""
        return len(self._in_flight)

    @property
    def refused(self) -> int:
        """Messages the broker refused since take_refused() was last called."""
        return len(self._refused)

    def take_confirmed(self) -> list[Hashable]:
        """The keys the broker confirmed since the last call, in the order they were published."""
        confirmed, self._confirmed = self._confirmed, []
        return confirmed

    def take_refused(self) -> list[Hashable]:
        """The keys the broker refused (nacked) since the last call: they were not taken, send them again."""
        refused, self._refused = self._refused, []
        return refused

    def unconfirmed(self) -> list[Hashable]:
        """The keys still waiting for an answer, in the order they were published (after a lost
        connection: the ones to send again)."""
        return list(self._in_flight.values())

    def close(self) -> None:
        """Close the connection (what is in flight stays unconfirmed) and release the I/O loop."""
        if self._released:
            return
        try:
            if not (self.connection.is_closing or self.connection.is_closed):
                self.connection.close()
            # Let the close handshake run, briefly: the broker's answer ends it. (A broker blocking
            # us may never read it; then the socket goes with this object.)
            deadline = time.monotonic() + 2.0
            while not self.connection.is_closed and time.monotonic() < deadline:
                self._run_loop(deadline - time.monotonic())
        except bus.BROKER_ERRORS:
            pass
        finally:
            if self.connection.is_closed:
                self._released = True
                self.connection.ioloop.close()

    # --- the I/O loop, and pika's callbacks that run inside it -----------------------------------

    def _run_loop(self, seconds: float) -> None:
        """Run the connection's I/O loop until a callback stops it or `seconds` pass."""
        ioloop = self.connection.ioloop
        timer = ioloop.call_later(max(0.0, seconds), ioloop.stop)
        try:
            ioloop.start()
        finally:
            ioloop.remove_timeout(timer)

    def _on_open(self, connection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(self._on_answer, callback=self._on_confirming)

    def _on_confirming(self, _frame) -> None:
        self._ready = True
        self.connection.ioloop.stop()

    def _on_answer(self, frame) -> None:
        method = frame.method
        into = self._confirmed if isinstance(method, pika.spec.Basic.Ack) else self._refused
        if method.multiple:
            # Everything up to this tag; they are in tag order, so only the head of the queue is taken.
            while self._in_flight and next(iter(self._in_flight)) <= method.delivery_tag:
                into.append(self._in_flight.popitem(last=False)[1])
        elif method.delivery_tag in self._in_flight:
            into.append(self._in_flight.pop(method.delivery_tag))
        if not self._answered:
            self._answered = True
            self.connection.ioloop.stop()

    def _on_channel_closed(self, _channel, reason: BaseException) -> None:
        # The broker closes a channel for a refused operation (an exchange gone, say): the messages
        # in flight will never be answered, so this publisher is done; its caller makes another.
        if self._lost is None:
            self._lost = reason
        if self.connection.is_open:
            self.connection.close()

    def _on_lost(self, _connection, reason: BaseException) -> None:
        if self._lost is None:
            self._lost = reason if isinstance(reason, BaseException) else pe.AMQPConnectionError(str(reason))
        self.connection.ioloop.stop()

    def _on_blocked(self, _connection, _frame) -> None:
        self.blocked = True
        log.warning("the broker is holding back published messages (a resource alarm); %d wait for their confirms",
                    len(self._in_flight))

    def _on_unblocked(self, _connection, _frame) -> None:
        self.blocked = False
        log.info("the broker takes published messages again")

    def _raise_if_lost(self) -> None:
        if self._lost is not None:
            lost = self._lost
            if not isinstance(lost, bus.BROKER_ERRORS):
                lost = pe.AMQPConnectionError(type(lost).__name__)
            raise lost
