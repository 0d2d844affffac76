"""RabbitMQ: the topology every service shares, connections, confirmed publishing, and what a message's
headers say about its trips through that topology.

One module past 400 lines because the topology and the headers that route and count a message
through it (x-clinic-*, and the broker's x-death) are one design, read together or not at all.

Topology (names under the bus namespace, `clinic` by default; `q` is a consuming service's queue):
  clinic.events      durable topic exchange all events are published to; its alternate
                     exchange is clinic.unrouted, so an event no queue is bound to yet is kept
  clinic.unrouted    fanout exchange and durable queue holding those events, up to a length and
                     an age from configuration (the oldest go first)
  clinic.<service>   q: one durable quorum queue per consuming service, with a delivery limit (the
                     safety net for a worker that crashes on a message, not the retry policy)
  q.retry            headers exchange: the consumer publishes a failed message here, its routing key
                     unchanged, with x-clinic-queue=q and x-clinic-step=<delay in ms> or "dead"
  q.wait.<ms>ms      one quorum queue per configured retry delay: the message waits there for the
                     queue's TTL, then is dead-lettered to q.requeue (its routing key kept)
  q.requeue          headers exchange that routes a message back to the queue x-clinic-queue names
  clinic.dead        direct exchange for the delivery limit's dead letters, keyed by the consuming queue
  q.dead             where the service's dead letters end: from q.retry (step "dead") and clinic.dead

Who published an event (clinic.broker_accounts): every publisher sets the AMQP user_id, which the
broker checks against the connection's user. A retry cannot keep it (the consumer publishes it again
as itself), so the consumer carries the publisher it checked in x-clinic-publisher. The retry and
requeue exchanges are the service's own: only its account (and the operations account) may publish
to them, and only the broker's dead-lettering to the requeue exchange once the service's delay queues
are there, so that header is believed in a message that came through one of them, and nowhere else
(vouched_publisher holds the whole rule).

The headers bindings match with x-match=all-with-x: plain "all" ignores every header whose name
starts with x-, and would route every message everywhere.

pika connections are not thread-safe: each thread makes its own Publisher or Consumer.
"""

from __future__ import annotations

import logging
import ssl

import pika
import pika.data
import pika.exceptions as pe
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from clinic.config import Settings, url_user

log = logging.getLogger(__name__)

# Everything that means "the broker connection is gone or unusable; reconnect and retry".
BROKER_ERRORS = (
    pe.AMQPConnectionError,
    # Raised by the connection workflow itself, not as an AMQPConnectionError: a server that accepts
    # the TCP connection and never answers in AMQP (a stopped broker, something else on the port)
    # ends in AMQPConnectorStackTimeout, a failed workflow in AMQPConnectionWorkflowFailed.
    AMQPConnectorException,
    pe.AMQPChannelError,
    pe.ChannelWrongStateError,
    pe.ConnectionWrongStateError,
    pe.StreamLostError,
    pe.NackError,
    pe.UnroutableError,
    OSError,
)


# How long a publish may wait on a broker that blocks publishers (a memory or disk alarm) before it fails.
BLOCKED_CONNECTION_TIMEOUT_SECONDS = 30
# How long the TCP connection plus the AMQP handshake may take (pika's stack_timeout): a server that
# accepts connections and never answers fails an attempt after this long.
HANDSHAKE_TIMEOUT_SECONDS = 15.0


def connection_parameters(settings: Settings) -> pika.URLParameters:
    params = pika.URLParameters(settings.rabbitmq_url)
    params.heartbeat = settings.broker_heartbeat_seconds
    params.blocked_connection_timeout = BLOCKED_CONNECTION_TIMEOUT_SECONDS
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.stack_timeout = HANDSHAKE_TIMEOUT_SECONDS
    params.client_properties = {"connection_name": f"{settings.service}"}
    if params.ssl_options is not None and settings.rabbitmq_ca_file:
        # amqps:// verifies the broker (host name included) against the system's CAs; a broker signed
        # by the clinic's own authority is verified against that one instead (CLINIC_RABBITMQ_CA_FILE).
        params.ssl_options = pika.SSLOptions(ssl.create_default_context(cafile=settings.rabbitmq_ca_file))
    return params


def connect(settings: Settings) -> pika.BlockingConnection:
    return pika.BlockingConnection(connection_parameters(settings))


# The headers that route a failed message (see the module's docstring).
QUEUE_HEADER = "x-clinic-queue"
STEP_HEADER = "x-clinic-step"
DEAD_STEP = "dead"
# Set when a dead letter is replayed: the expiries counted until then, so it starts with fresh attempts.
REPLAYED_AFTER_HEADER = "x-clinic-replayed-after-expiries"
# What a dead letter says about why it is there (never patient data).
REASON_HEADER = "x-clinic-reason"
EXCEPTION_HEADER = "x-clinic-exception"
ERROR_HEADER = "x-clinic-error"
ATTEMPTS_HEADER = "x-clinic-attempts"
DEAD_AT_HEADER = "x-clinic-dead-at"
# The publisher (broker account) the consumer checked on first receipt, carried through retries and
# dead letters ("" when not known); believed only as the module's docstring says.
PUBLISHER_HEADER = "x-clinic-publisher"
# Headers that belong to one trip: not carried onto the next.
_TRIP_HEADERS = (STEP_HEADER, REASON_HEADER, EXCEPTION_HEADER, ERROR_HEADER, ATTEMPTS_HEADER, DEAD_AT_HEADER, "x-delivery-count")


def retry_exchange(settings: Settings) -> str:
    """The service's own: no other service's account may publish a retry (and its header) to it."""
    return f"{settings.queue}.retry"


def requeue_exchange(settings: Settings) -> str:
    """The service's own: what comes through it was published by the service's consumer (or replayed
    by the operations account) and dead-lettered back by the broker."""
    return f"{settings.queue}.requeue"


def broker_user(settings: Settings) -> str:
    """The account the settings connect as: the user_id of what they publish."""
    return url_user(settings.rabbitmq_url) or "guest"  # pika logs in as guest when the URL names no user


def vouched_publisher(settings: Settings, exchange: str, properties) -> str:
    """Who published a message that came through `exchange`, as far as the broker vouches for it ("" when
    nobody does); the one place the rule of the module's docstring is applied, by the consumer and by
    the `clinic` command's dead-letter listings and replays alike:

      the events exchange              the user_id, which the broker checked against the publisher's login
      the service's own retry or       the x-clinic-publisher header its consumer wrote after checking that
      requeue exchange                 user_id (only its account and the operations account may publish
                                       there, and the broker's dead-lettering to the requeue exchange)
      the dead-letter exchange         the user_id: the broker dead-letters the message as published, and
                                       every service may write there, so a header there proves nothing
      the default exchange ("")        the user_id: no service's account may publish there (straight into a
                                       queue), only the operations account, trusted with replays anyway
      anything else                    nobody
    """
    if exchange in (settings.exchange, settings.dead_letter_exchange, ""):
        return properties.user_id or ""
    if exchange in (retry_exchange(settings), requeue_exchange(settings)):
        headers = properties.headers
        claimed = headers.get(PUBLISHER_HEADER) if isinstance(headers, dict) else None
        return claimed if isinstance(claimed, str) else ""
    return ""


def delay_milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def delay_queue(settings: Settings, milliseconds: int) -> str:
    """Named by its delay: a changed CLINIC_RETRY_DELAYS declares new queues rather than redeclaring an
    existing one with another TTL, which the broker would refuse. ("wait", where they were "delay" when
    they dead-lettered to a requeue exchange all services shared.)"""
    return f"{settings.queue}.wait.{milliseconds}ms"


def delay_queue_prefix(settings: Settings) -> str:
    return f"{settings.queue}.wait."


def declare_exchanges(channel, settings: Settings) -> None:
    """The exchanges every publisher needs, and the unrouted queue behind the alternate exchange."""
    channel.exchange_declare(settings.unrouted_exchange, exchange_type="fanout", durable=True)
    _declare_unrouted_queue(channel, settings)
    channel.queue_bind(settings.unrouted_queue, settings.unrouted_exchange)
    channel.exchange_declare(
        settings.exchange,
        exchange_type="topic",
        durable=True,
        arguments={"alternate-exchange": settings.unrouted_exchange},
    )
    channel.exchange_declare(settings.dead_letter_exchange, exchange_type="direct", durable=True)


def unrouted_arguments(settings: Settings) -> dict:
    return {
        "x-queue-type": "quorum",
        # Events published for consumers that do not exist yet are kept, but not for ever: the oldest
        # go first once the queue is full, and any goes once it is older than the TTL.
        "x-max-length": settings.unrouted_max_length,
        "x-overflow": "drop-head",
        "x-message-ttl": settings.unrouted_ttl_seconds * 1000,
    }


# Unrouted queues already warned about in this process (a relay makes a publisher on every reconnect).
_kept_unrouted: set[str] = set()


def _declare_unrouted_queue(channel, settings: Settings) -> None:
    """Declare the unrouted queue with the configured limits. A queue made before with other arguments
    makes the broker refuse the declaration (406 PRECONDITION_FAILED) and close the channel, so it is
    tried on a scratch channel: an empty queue is then deleted and declared again; one holding events
    is kept as it is, with a warning, rather than losing them or stopping the service."""
    queue, arguments = settings.unrouted_queue, unrouted_arguments(settings)
    if _on_scratch_channel(channel, lambda scratch: scratch.queue_declare(queue, durable=True, arguments=arguments)):
        return
    waiting = []

    def replace_if_empty(scratch):
        waiting.append(scratch.queue_declare(queue, passive=True).method.message_count)
        if waiting[0] == 0:
            # Quorum queues refuse a delete "if empty" (and close the connection for it), so an unrouted
            # event published between the look and the delete is lost: nobody consumes it, and this
            # happens once, the first time the limits are configured.
            scratch.queue_delete(queue)
            scratch.queue_declare(queue, durable=True, arguments=arguments)

    if _on_scratch_channel(channel, replace_if_empty) and waiting[0] == 0:
        log.info("%s declared again with the configured length limit and TTL", queue)
        return
    if queue not in _kept_unrouted:
        _kept_unrouted.add(queue)
        log.warning("%s was declared with other arguments and holds events: it keeps its old limits, and "
                    "CLINIC_UNROUTED_MAX_LENGTH (%d) and CLINIC_UNROUTED_TTL_SECONDS (%d) apply once it is empty "
                    "(see `clinic unrouted list|replay`)", queue, settings.unrouted_max_length, settings.unrouted_ttl_seconds)


def _on_scratch_channel(channel, work) -> bool:
    """Run work(scratch) on a new channel of `channel`'s connection; False when the broker refused it
    with 406 PRECONDITION_FAILED (which closes that channel, and only that one)."""
    scratch = channel.connection.channel()
    try:
        work(scratch)
    except pe.ChannelClosedByBroker as exc:
        if exc.reply_code != 406:
            raise
        return False
    finally:
        if scratch.is_open:
            scratch.close()
    return True


def _binding(**headers) -> dict:
    return {"x-match": "all-with-x", **headers}


def requeue_binding(settings: Settings) -> dict:
    """How the service's queue is bound to the requeue exchange: what comes back for it."""
    return _binding(**{QUEUE_HEADER: settings.queue})


def declare_service_queue(channel, settings: Settings, routing_keys) -> None:
    """The service's quorum queue, its retry delay queues, its dead-letter queue, and a binding per
    handled event type."""
    declare_exchanges(channel, settings)
    retry, requeue = retry_exchange(settings), requeue_exchange(settings)
    channel.exchange_declare(retry, exchange_type="headers", durable=True)
    channel.exchange_declare(requeue, exchange_type="headers", durable=True)

    channel.queue_declare(settings.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(settings.dead_letter_queue, settings.dead_letter_exchange, routing_key=settings.queue)
    channel.queue_bind(settings.dead_letter_queue, retry,
                       arguments=_binding(**{QUEUE_HEADER: settings.queue, STEP_HEADER: DEAD_STEP}))

    for milliseconds in sorted({delay_milliseconds(seconds) for seconds in settings.retry_delays_seconds}):
        name = delay_queue(settings, milliseconds)
        channel.queue_declare(name, durable=True, arguments={
            "x-queue-type": "quorum",
            "x-message-ttl": milliseconds,
            # No dead-letter routing key: the message comes back with the one it was published with.
            "x-dead-letter-exchange": requeue,
            # The broker keeps a waiting message until the work queue has taken it: a retry is never lost
            # on the way back. (At-least-once dead-lettering needs reject-publish; no length limit is set.)
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        })
        channel.queue_bind(name, retry, arguments=_binding(**{QUEUE_HEADER: settings.queue, STEP_HEADER: str(milliseconds)}))

    # These arguments must never change: a broker refuses to declare an existing queue with others.
    channel.queue_declare(
        settings.queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            # Quorum queues on RabbitMQ 3.10 set no limit by default: a message that crashes its worker
            # every time would loop forever.
            "x-delivery-limit": settings.delivery_limit,
            "x-dead-letter-exchange": settings.dead_letter_exchange,
            "x-dead-letter-routing-key": settings.queue,
        },
    )
    channel.queue_bind(settings.queue, requeue, arguments=requeue_binding(settings))
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


def cancel_without_waiting(channel: pika.adapters.blocking_connection.BlockingChannel,
                           consumer_tag: str) -> list[tuple]:
    """Ask the broker to send the consumer no more, without waiting for its Cancel-Ok; returns the
    deliveries the blocking channel had received for it and not yet passed on, (method, properties,
    body) each, to be handled as if passed on. One still on its way pika rejects, back to the queue.

    pika's public BlockingChannel.basic_cancel waits for Cancel-Ok with no limit, no beat and no way
    to stop: on a broker that stopped answering, a worker's stop would hang until the SIGKILL. So
    this works on pika's private internals, read and tested on pika 1.4.4 (constraints.txt pins it;
    shared/pyproject.toml keeps pika below 1.5, whose internals may differ): the asynchronous
    channel under the blocking one (`_impl`), whose basic_cancel without a callback sends a nowait
    Basic.Cancel; the blocking channel's queue of deliveries not yet passed on
    (`_remove_pending_deliveries`); and its table of consumers (`_consumer_infos`), from which the
    consumer is removed so that closing the channel does not cancel it again and wait. The blocking
    channel's handler of a broker's own Basic.Cancel (`_on_consumer_cancelled_by_broker`, on the
    `_impl`'s `callbacks`) looks the consumer up in that table, a KeyError for one removed: it is
    replaced by one that passes over a consumer no longer there.

    Raises AttributeError, before anything was sent, when pika no longer has these internals."""
    impl = channel._impl
    consumers = channel._consumer_infos
    take_pending = channel._remove_pending_deliveries
    on_broker_cancel = channel._on_consumer_cancelled_by_broker
    callbacks = impl.callbacks

    def on_cancel_by_broker(method_frame) -> None:
        # A broker's Basic.Cancel that crossed ours (the queue deleted, a node lost): already forgotten.
        if method_frame.method.consumer_tag in consumers:
            on_broker_cancel(method_frame)

    callbacks.remove(channel.channel_number, pika.spec.Basic.Cancel, on_broker_cancel)
    impl.add_on_cancel_callback(on_cancel_by_broker)
    impl.basic_cancel(consumer_tag)   # no callback: nowait, no Cancel-Ok is awaited
    pending = [(event.method, event.properties, event.body) for event in take_pending(consumer_tag)]
    consumers.pop(consumer_tag, None)
    return pending


def longest_broker_wait(settings: Settings) -> float:
    """The longest one call on a blocking connection may wait on the broker before it fails, in seconds.

    A broker that stopped answering (a frozen process, a lost network) is noticed by pika's heartbeat
    check, which runs every heartbeat + 5 s and ends the connection at the first check with nothing
    received since the one before: up to 2 × (heartbeat + 5) s. A broker that blocks publishers fails
    a publish after BLOCKED_CONNECTION_TIMEOUT_SECONDS, and may stop answering on top of that. (With
    heartbeats off, CLINIC_BROKER_HEARTBEAT_SECONDS=0, nothing notices a broker that stopped answering.)"""
    return 2 * (settings.broker_heartbeat_seconds + 5) + BLOCKED_CONNECTION_TIMEOUT_SECONDS


# --- what the broker's and the clinic's headers say, read defensively ----------------------------
#
# Any client may publish a message with any headers, x-death and x-clinic-* included. None of them
# may make the consumer or the `clinic` command fail, nor make a message retry for ever; and a
# malformed x-death must never reach the broker again: RabbitMQ 3.10's dead-lettering crashes on an
# entry that is not a table, or on a count it cannot add one to, and then stops dead-lettering every
# message of the node's at-least-once queues (the delay queues) until it is restarted.


def _whole(value) -> bool:
    # bool is an int in Python, and an AMQP boolean is no count.
    return isinstance(value, int) and not isinstance(value, bool)


def deaths(headers) -> list[dict]:
    """The entries of a message's x-death header that are as the broker writes them: tables whose
    queue and reason are text and whose count is a whole number of 0 or more. Anything else is left
    out, here and when the message is sent on (forwarded)."""
    entries = headers.get("x-death") if isinstance(headers, dict) else None
    if not isinstance(entries, list):
        return []
    return [entry for entry in entries
            if isinstance(entry, dict) and isinstance(entry.get("queue"), str) and isinstance(entry.get("reason"), str)
            and _whole(entry.get("count")) and entry["count"] >= 0]


def routing_keys_of(death: dict) -> list[str]:
    """The routing keys an x-death entry says the message was published with (none when it does not say),
    only those a message can be published with again (AMQP allows at most 255 bytes)."""
    keys = death.get("routing-keys")
    if not isinstance(keys, list):
        return []
    return [key for key in keys if isinstance(key, str) and len(key.encode("utf-8", "replace")) <= 255]


def expiries(headers: dict | None, settings: Settings, since_replay: bool = True) -> int:
    """How many times a message has come back from this service's delay queues, from its x-death header
    (the broker counts each expiry there; the queue's own delivery count starts again after each trip),
    less, `since_replay`, those counted before an operator last replayed it (REPLAYED_AFTER_HEADER).

    A replay mark that is not a whole number, or more than the expiries counted (which no genuine replay
    writes), is ignored: it must not give a message attempts it does not have, for ever."""
    prefix = delay_queue_prefix(settings)
    counted = sum(death["count"] for death in deaths(headers)
                  if death["queue"].startswith(prefix) and death["reason"] == "expired")
    if since_replay:
        counted -= replay_mark(headers, counted)
    return max(0, counted)


def replay_mark(headers, counted: int) -> int:
    """The expiries counted when the message was last replayed (REPLAYED_AFTER_HEADER), if that is
    believable against the `counted` now; else 0."""
    mark = headers.get(REPLAYED_AFTER_HEADER) if isinstance(headers, dict) else None
    return mark if _whole(mark) and 0 <= mark <= counted else 0


def _encodable(value) -> bool:
    """True when pika can send the value in a header table again (it reads AMQP floats, for one, but
    cannot write them)."""
    try:
        pika.data.encode_value([], value)
    except (pe.AMQPError, TypeError, ValueError, OverflowError, AttributeError):
        return False
    return True


def forwarded(properties: pika.BasicProperties, **headers) -> pika.BasicProperties:
    """The properties of a message sent on again (to a delay queue, to the dead letters, back to its
    queue): the original ones, x-death included, with this trip's headers in place of the last's.

    Only x-death's well-formed entries (deaths) go on, and a header that cannot be sent again is left
    out, with a warning naming it (never its value)."""
    original = properties.headers if isinstance(properties.headers, dict) else {}
    kept, dropped = {}, []
    for name, value in original.items():
        if name in _TRIP_HEADERS:
            continue
        if name == "x-death":
            value = deaths(original)
            if value != original[name]:
                dropped.append(name)
            if not value:
                continue
        if not _encodable(value):
            dropped.append(name)
            continue
        kept[name] = value
    if dropped:
        log.warning("message %s: header(s) %s not as expected; sent on without what was odd", properties.message_id,
                    ", ".join(sorted(set(map(str, dropped)))))
    return pika.BasicProperties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers={**kept, **headers},
        delivery_mode=pika.DeliveryMode.Persistent,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        message_id=properties.message_id,
        timestamp=properties.timestamp,
        type=properties.type,
        app_id=properties.app_id,
        # Not user_id: the broker refuses a publish whose user_id is not the connection's own user.
    )


def event_properties(message_id: str, routing_key: str, message_type: str | None = None,
                     user_id: str | None = None) -> pika.BasicProperties:
    """The properties every event is published with, by every publisher: persistent JSON, its id, its
    type, and who publishes it (user_id: the connection's user, which the broker checks)."""
    return pika.BasicProperties(
        message_id=message_id,
        type=message_type or routing_key,
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        user_id=user_id,
    )


class Publisher:
    """One confirmed-publishing connection, for one thread."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.user = broker_user(settings)
        self.connection = connect(settings)
        self.channel = self.connection.channel()
        declare_exchanges(self.channel, settings)
        self.channel.confirm_delivery()

    def publish(self, routing_key: str, message_id: str, body: str | bytes, exchange: str | None = None,
                message_type: str | None = None, user_id: str | None = None) -> None:
        """Returns once the broker confirmed the message; raises a BROKER_ERRORS member otherwise.
        Published as this connection's user, unless `user_id` names another (only an account tagged
        impersonator may: the broker refuses it for any other, closing the channel)."""
        self.channel.basic_publish(
            exchange=self.settings.exchange if exchange is None else exchange,
            routing_key=routing_key,
            body=body.encode() if isinstance(body, str) else body,
            properties=event_properties(message_id, routing_key, message_type, user_id or self.user),
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
