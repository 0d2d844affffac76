"""Raw ceilings of this machine, measured in one run, for later figures to be compared with.

  pika confirmed publish     one persistent message to a durable quorum queue, confirm awaited each time
  pika unconfirmed publish   the same messages with no confirms at all (pika's SelectConnection), timed
                             until the queue holds them all: how fast the broker takes messages in
  clinic.bus.Publisher       the same, through the project's publisher (what the outbox relay uses)
  consume and ack            draining that quorum queue with basic_consume, manual acks, a prefetch
  PostgreSQL inserts         batched (executemany, one transaction per batch) and one row per transaction
  outbox relay               clinic.outbox.Relay.publish_pending in a loop over a filled outbox table, on
                             records' own broker account (its prefix, its topic permissions)

Servers come from CLINIC_BENCH_RABBITMQ_URL / CLINIC_BENCH_POSTGRES_URL when set; otherwise they are
started from the local Debian packages in a temporary directory and stopped at the end.
Every run uses its own queue names and a fresh database, removed at the end.

    .venv/bin/python benchmarks/ceilings.py [--messages N] [--rows N] ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import clinic  # noqa: F401 - installed in the project's virtualenv
except ImportError:  # run with another interpreter: use the library from the source tree
    sys.path.insert(0, str(ROOT / "shared"))
sys.path.insert(0, str(ROOT))

import pika
import psycopg
import sqlalchemy as sa

from benchmarks.servers import Broker, fresh_database, scratch_directory, start_postgres, start_rabbitmq
from clinic import bus
from clinic.db import create_engine, messaging_tables
from clinic.outbox import Relay, pending_count

QUORUM = {"x-queue-type": "quorum"}
INSERT_OUTBOX = "INSERT INTO outbox (event_id, event_type, body, created_at) VALUES (%s, %s, %s, %s)"


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    notes: str = ""


def per_second(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


class Stopwatch:
    """Times a run of operations and, on the way, each fifth of it: the figure is the whole run's rate,
    the fifths show how steady it was (a shared or virtual machine varies by tens of percent)."""

    def __init__(self, expected: int, parts: int = 5):
        self.lap_size = max(1, expected // parts)
        self.done = 0
        self.lap_rates: list[float] = []

    def start(self) -> None:
        self.started = self.lap_started = time.perf_counter()
        self.lap_done = 0

    def tick(self, count: int = 1) -> None:
        self.done += count
        if self.done - self.lap_done >= self.lap_size:
            now = time.perf_counter()
            self.lap_rates.append(per_second(self.done - self.lap_done, now - self.lap_started))
            self.lap_started, self.lap_done = now, self.done

    def stop(self) -> None:
        self.elapsed = time.perf_counter() - self.started

    @property
    def rate(self) -> float:
        return per_second(self.done, self.elapsed)

    def summary(self) -> str:
        spread = f", fifths {min(self.lap_rates):,.0f}-{max(self.lap_rates):,.0f}/s" if len(self.lap_rates) > 1 else ""
        return f"{self.elapsed:.2f}s{spread}"


def make_body(size: int) -> bytes:
    """A JSON document of exactly `size` bytes (at least a few), standing in for an event envelope."""
    empty = json.dumps({"pad": ""}, separators=(",", ":"))
    return json.dumps({"pad": "x" * max(0, size - len(empty))}, separators=(",", ":")).encode()


# --- RabbitMQ -------------------------------------------------------------------------------


def raw_publish(url: str, queue: str, count: int, body: bytes) -> Figure:
    """pika's BlockingChannel in confirm mode waits for each message's confirm before returning."""
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True, arguments=QUORUM)
        channel.confirm_delivery()
        properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json")
        watch = Stopwatch(count)
        watch.start()
        for _ in range(count):
            channel.basic_publish("", queue, body, properties)
            watch.tick()
        watch.stop()
        held = channel.queue_declare(queue, passive=True).method.message_count
    notes = f"{count} x {len(body)} B, default exchange, {watch.summary()}"
    if held != count:
        notes += f"; WARNING queue holds {held}"
    return Figure("pika publish, confirmed, quorum queue", watch.rate, "msg/s", notes)


def raw_publish_unconfirmed(url: str, queue: str, count: int, body: bytes) -> Figure:
    """No confirm mode: nothing is awaited, so the figure is how fast the broker takes messages in,
    timed until the queue holds every one (a publish loop alone would only time the socket buffer).
    Through pika's asynchronous adapter, SelectConnection, as the relay publishes: a
    BlockingConnection flushes after every publish and would time the client more than the broker."""
    params = pika.URLParameters(url)
    with pika.BlockingConnection(params) as counting:
        counter = counting.channel()
        counter.queue_declare(queue, durable=True, arguments=QUORUM)
        opened: dict = {}

        def on_open(connection):
            connection.channel(on_open_callback=lambda channel: (opened.update(channel=channel), connection.ioloop.stop()))

        def on_failure(connection, error):
            opened["error"] = error
            connection.ioloop.stop()

        connection = pika.SelectConnection(params, on_open_callback=on_open, on_open_error_callback=on_failure,
                                           on_close_callback=on_failure)
        connection.ioloop.start()
        if "channel" not in opened:
            raise RuntimeError(f"could not open a channel: {opened.get('error')!r}")
        channel = opened["channel"]
        properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json")
        watch = Stopwatch(count)
        watch.start()
        for _ in range(count):
            channel.basic_publish("", queue, body, properties)
        give_up = time.monotonic() + 120
        held = 0
        while held < count and time.monotonic() < give_up and "error" not in opened:
            # The I/O loop writes what is queued for a moment; the other connection counts what arrived.
            connection.ioloop.call_later(0.002, connection.ioloop.stop)
            connection.ioloop.start()
            held = counter.queue_declare(queue, passive=True).method.message_count
        watch.tick(held)
        watch.stop()
        connection.close()
        connection.ioloop.call_later(2, connection.ioloop.stop)
        connection.ioloop.start()   # until the close completes (on_failure stops it) or 2 s pass
        connection.ioloop.close()
        counter.queue_purge(queue)
    notes = f"{count} x {len(body)} B, default exchange, SelectConnection, timed until the queue held them, {watch.summary()}"
    if held != count:
        notes += f"; WARNING queue holds {held}"
    return Figure("pika publish, unconfirmed, quorum queue", watch.rate, "msg/s", notes)


def consume_and_ack(url: str, queue: str, count: int, prefetch: int) -> Figure:
    """Drain the queue the publish step filled: one basic_ack per message, as the services' consumers do."""
    watch = Stopwatch(count)
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch)

        def on_message(ch, method, _properties, _body):
            ch.basic_ack(method.delivery_tag)
            watch.tick()
            if watch.done >= count:
                ch.stop_consuming()

        channel.basic_consume(queue, on_message)
        # A guard so a short queue ends the step instead of hanging the run.
        connection.call_later(120, channel.stop_consuming)
        watch.start()
        channel.start_consuming()
        watch.stop()
    notes = f"{watch.done} msgs, prefetch {prefetch}, ack each, {watch.summary()}"
    if watch.done != count:
        notes += f"; WARNING expected {count}"
    return Figure("pika consume + ack, quorum queue", watch.rate, "msg/s", notes)


def bus_publisher(settings, queue: str, count: int, body: bytes) -> Figure:
    """The project's Publisher to a quorum queue like the one raw pika used, so its overhead shows."""
    publisher = bus.Publisher(settings)
    try:
        publisher.channel.queue_declare(queue, durable=True, arguments=QUORUM)
        # Ids are made beforehand: the relay, too, reads them from the outbox rather than making them.
        message_ids = [str(uuid.uuid4()) for _ in range(count)]
        watch = Stopwatch(count)
        watch.start()
        for message_id in message_ids:
            publisher.publish(queue, message_id, body, exchange="")
            watch.tick()
        watch.stop()
        held = publisher.channel.queue_declare(queue, passive=True).method.message_count
    finally:
        publisher.close()
    notes = f"{count} x {len(body)} B, default exchange, {watch.summary()}"
    if held != count:
        notes += f"; WARNING queue holds {held}"
    return Figure("clinic.bus.Publisher, quorum queue", watch.rate, "msg/s", notes)


def delete_bus_objects(url: str, queues: list[str], exchanges: list[str]) -> None:
    """Best effort: leave a shared broker as we found it."""
    try:
        with pika.BlockingConnection(pika.URLParameters(url)) as connection:
            channel = connection.channel()
            for queue in queues:
                channel.queue_delete(queue)
            for exchange in exchanges:
                channel.exchange_delete(exchange)
    except bus.BROKER_ERRORS as exc:
        print(f"note: could not delete the benchmark's queues: {type(exc).__name__}", file=sys.stderr)


# --- PostgreSQL -----------------------------------------------------------------------------


# The relays here run as records' on records' broker account: the broker lets that account publish
# records.* only (its topic permissions), and checks each message's user_id against it.
RELAYED_SERVICE, OUTBOX_EVENT_TYPE = "records", "records.bench.published"


def outbox_rows(count: int, body: str) -> list[tuple]:
    now = datetime.now(UTC)
    return [(str(uuid.uuid4()), OUTBOX_EVENT_TYPE, body, now) for _ in range(count)]


def batched_inserts(url: str, rows: list[tuple], batch: int) -> Figure:
    """psycopg's executemany pipelines the statements; each batch is one transaction."""
    with psycopg.connect(url, autocommit=True) as connection, connection.cursor() as cursor:
        watch = Stopwatch(len(rows))
        watch.start()
        for first in range(0, len(rows), batch):
            chunk = rows[first:first + batch]
            with connection.transaction():
                cursor.executemany(INSERT_OUTBOX, chunk)
            watch.tick(len(chunk))
        watch.stop()
    return Figure(f"PostgreSQL insert, {batch} rows/transaction", watch.rate, "rows/s",
                  f"{len(rows)} rows into outbox (3 indexes), executemany, {watch.summary()}")


def single_row_inserts(url: str, rows: list[tuple]) -> Figure:
    """BEGIN, INSERT, COMMIT per row: what a request that writes one row costs at least."""
    with psycopg.connect(url, autocommit=True) as connection:
        watch = Stopwatch(len(rows))
        watch.start()
        for row in rows:
            with connection.transaction():
                connection.execute(INSERT_OUTBOX, row)
            watch.tick()
        watch.stop()
    return Figure("PostgreSQL insert, 1 row/transaction", watch.rate, "rows/s",
                  f"{len(rows)} rows into outbox, {watch.summary()}")


def durability_settings(url: str) -> str:
    """The settings that decide what a commit costs, so the figures are read for what they are."""
    with psycopg.connect(url, autocommit=True) as connection:
        return ", ".join(f"{name}={connection.execute(f'SHOW {name}').fetchone()[0]}" for name in ("fsync", "synchronous_commit"))


# --- the outbox relay -----------------------------------------------------------------------


def fill_outbox(engine, outbox, count: int, body: str) -> None:
    columns = ("event_id", "event_type", "body", "created_at")
    with engine.begin() as connection:
        connection.execute(outbox.insert(), [dict(zip(columns, row, strict=True)) for row in outbox_rows(count, body)])


def relay_throughput(settings, engine, outbox, count: int, body: str) -> Figure:
    """Relay.publish_pending until a filled outbox is empty: each call reads up to a window of rows
    (a batch per short transaction), publishes them through the topic exchange with their confirms
    pipelined, and marks the confirmed. (benchmarks/relay.py times Relay.run, which keeps the window full.)"""
    with bus.connect(settings) as connection:
        # The real topology: the events exchange and a service quorum queue bound to every event.
        bus.declare_service_queue(connection.channel(), settings, ["#"])
    relay = Relay(settings, engine, outbox)
    try:
        # One row first, so opening the relay's broker connection is not timed (nor is it for raw pika).
        fill_outbox(engine, outbox, 1, body)
        relay.publish_pending()
        fill_outbox(engine, outbox, count, body)
        watch = Stopwatch(count)
        watch.start()
        while watch.done < count:
            published = relay.publish_pending()
            if published == 0:
                break
            watch.tick(published)
        watch.stop()
        left = pending_count(engine, outbox)
    finally:
        # run() closes the relay's connections when it ends; we drive publish_pending ourselves.
        relay.close()
    notes = (f"{watch.done} events, batch {settings.relay_batch_size}, window {settings.relay_window}, topic exchange, "
             f"{watch.summary()}")
    if left or watch.done != count:
        notes += f"; WARNING {left} left unpublished"
    return Figure("clinic.outbox.Relay (PostgreSQL outbox)", watch.rate, "events/s", notes)


# --- servers and the run --------------------------------------------------------------------


def start_servers(stack: ExitStack, bus_namespace: str) -> tuple[Broker, str, str]:
    """Returns (the broker, PostgreSQL URL, how they were had); anything started is stopped by the stack."""
    directory = scratch_directory(stack, "clinic-bench-")
    broker = start_rabbitmq(stack, directory, bus_namespace)
    postgres_url, postgres_source = start_postgres(stack, directory)
    return broker, postgres_url, f"{broker.source}; {postgres_source}"


def measure(args, stack: ExitStack) -> list[Figure]:
    namespace = f"bench-{uuid.uuid4().hex[:10]}"
    broker, server_url, sources = start_servers(stack, namespace)
    rabbit_url = broker.url
    database_url = fresh_database(stack, server_url)
    with psycopg.connect(database_url) as connection:
        version = connection.execute("SHOW server_version").fetchone()[0]
    durability = durability_settings(database_url)
    print(f"servers: {sources}")
    print(f"PostgreSQL {version} ({durability}), database {database_url.rsplit('/', 1)[1]}; "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, pika {pika.__version__}, psycopg {psycopg.__version__}")
    sys.stdout.flush()

    settings = broker.settings_for(RELAYED_SERVICE, bus_namespace=namespace, database_url=database_url)
    raw_queue, bus_queue, unconfirmed_queue = f"{namespace}.raw", f"{namespace}.publisher", f"{namespace}.unconfirmed"
    stack.callback(
        delete_bus_objects, rabbit_url,
        [raw_queue, bus_queue, unconfirmed_queue, settings.queue, settings.dead_letter_queue, settings.unrouted_queue],
        [settings.exchange, settings.unrouted_exchange, settings.dead_letter_exchange],
    )
    body = make_body(args.body_bytes)

    figures = [raw_publish(rabbit_url, raw_queue, args.messages, body)]
    figures.append(raw_publish_unconfirmed(rabbit_url, unconfirmed_queue, args.messages, body))
    figures.append(consume_and_ack(rabbit_url, raw_queue, args.messages, args.prefetch))
    # The raw rows and the Publisher's publish to the default exchange, which no service account may write
    # to: they run on the administrator's account. Beside raw pika the Publisher adds the user_id (which
    # the broker checks against any account alike) and its own code; no topic permission is involved.
    figures.append(bus_publisher(settings.with_changes(rabbitmq_url=rabbit_url), bus_queue, args.messages, body))

    engine = create_engine(database_url)
    stack.callback(engine.dispose)
    metadata = sa.MetaData()
    outbox, _inbox = messaging_tables(metadata)
    metadata.create_all(engine)
    text_body = body.decode()
    figures.append(batched_inserts(database_url, outbox_rows(args.rows, text_body), args.batch))
    figures.append(single_row_inserts(database_url, outbox_rows(args.single_rows, text_body)))
    for figure in figures[-2:]:
        figure.notes += f"; {durability}"

    # The relay starts from an empty outbox, as a service's would.
    with engine.begin() as connection:
        connection.execute(sa.text("TRUNCATE outbox RESTART IDENTITY"))
    figures.append(relay_throughput(settings, engine, outbox, args.messages, text_body))
    return figures


def print_table(figures: list[Figure]) -> None:
    header = ("name", "figure", "unit", "notes")
    lines = [(f.name, f"{f.value:,.0f}", f.unit, f.notes) for f in figures]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(3)]
    for row in [header, tuple("-" * w for w in widths) + ("-----",), *lines]:
        print(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000,
                        help="messages per RabbitMQ step and events for the relay (default 5000)")
    parser.add_argument("--rows", type=int, default=50000, help="rows for the batched insert (default 50000)")
    parser.add_argument("--single-rows", type=int, default=5000, help="rows for one-row-per-transaction inserts (default 5000)")
    parser.add_argument("--batch", type=int, default=500, help="rows per transaction in the batched insert (default 500)")
    parser.add_argument("--prefetch", type=int, default=100, help="consumer prefetch (default 100)")
    parser.add_argument("--body-bytes", type=int, default=512, help="message and outbox body size (default 512)")
    args = parser.parse_args(argv)
    if min(args.messages, args.rows, args.single_rows, args.batch, args.prefetch) < 1:
        parser.error("counts must be at least 1")

    start = time.perf_counter()
    with ExitStack() as stack:  # stops what was started and removes what was made, whatever happens
        figures = measure(args, stack)
    print()
    print_table(figures)
    print(f"\ntotal run time {time.perf_counter() - start:.1f}s (including starting and stopping any local servers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
