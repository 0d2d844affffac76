"""How fast one consumer applies a backlog of events, beside the raw ceiling of the same run.

  raw consume + ack   pika draining a quorum queue of contact-change messages with basic_consume, manual
                      acks, the consumer's prefetch: what the broker and pika do at best
  batches             notifications' handlers (the contact copy, the patient's waiting messages) applying
                      a backlog of records.patient.contact_changed through one clinic.inbox.Consumer, the
                      way its worker does: up to `prefetch` events per database transaction
  one at a time       the same with prefetch 1: one event per transaction (how every consumer ran before)

Each backlog is published before its consumer starts, to notifications' real queue (declared as
`clinic migrate` does) on the events exchange, one patient per event, by records' broker account with
its user_id, as records' relay publishes them; the consumer runs on notifications' own account and
checks every event's publisher, as in production (benchmarks/servers.py gives the broker the accounts). The time runs from the consumer's
start until its metrics count every event applied; the database is checked afterwards (one contact copy
and one inbox row per event, the queue empty). Target: batches >= 1,500 events/s on PostgreSQL.
Each consumer row gives its time per event and the CPU its thread spent in it: the rest is waiting
for PostgreSQL and the broker (on a small machine, also for the CPU they take).

Servers come from CLINIC_BENCH_RABBITMQ_URL / CLINIC_BENCH_POSTGRES_URL when set; otherwise they are
started from the local Debian packages in a temporary directory and stopped at the end. Every run uses
its own queue names and fresh databases, removed at the end.

    .venv/bin/python benchmarks/consumers.py [--events 10000] [--single-events 10000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import logging
import os
import platform
import pstats
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pika  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402

from benchmarks.booking import print_table  # noqa: E402
from benchmarks.servers import (  # noqa: E402
    Broker,
    describe_postgres,
    fresh_database,
    scratch_directory,
    start_postgres,
    start_rabbitmq,
)
from clinic import bus, events  # noqa: E402
from clinic.config import load_settings  # noqa: E402
from clinic.db import create_engine  # noqa: E402
from clinic.inbox import Consumer  # noqa: E402
from clinic.migrations import migrate  # noqa: E402
from notifications import db as notifications_db  # noqa: E402
from notifications.config import load_mail_settings  # noqa: E402
from notifications.handlers import make_handlers  # noqa: E402

TARGET = 1500
QUORUM = {"x-queue-type": "quorum"}


class Run:
    """A figure: how many in how long, and the slowest and fastest fifth (a shared machine varies);
    for a consumer, the CPU time its thread spent meanwhile (the rest of its time it waited on the
    database or the broker)."""

    def __init__(self, count: int, seconds: float, fifths: list[float], cpu_seconds: float | None = None):
        self.count, self.seconds, self.fifths, self.cpu_seconds = count, seconds, fifths, cpu_seconds

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")

    def spread(self) -> str:
        return f", fifths {min(self.fifths):,.0f}-{max(self.fifths):,.0f}/s" if len(self.fifths) > 1 else ""

    def per_event(self) -> str:
        """Time per event: in all, and the consumer thread's CPU."""
        cpu = f" ({self.cpu_seconds / self.count * 1e6:,.0f} CPU in its thread)" if self.cpu_seconds is not None else ""
        return f"{self.seconds / self.count * 1e6:,.0f} µs/event{cpu}"


def contact_changes(count: int) -> list[bytes]:
    """`count` contact changes, one patient each, as records publishes them."""
    bodies = []
    for n in range(count):
        contact = {"patient_id": str(uuid.uuid4()), "given_name": "Ida", "family_name": f"Berg{n}",
                   "email": f"patient{n}@example.org", "phone": None, "preferred_contact": "email",
                   "email_opt_out": False, "contact_version": 1}
        event = events.Event(type=events.PATIENT_CONTACT_CHANGED, producer="records",
                             data=events.serialise_payload(events.PATIENT_CONTACT_CHANGED, contact))
        bodies.append((event.id, event.to_json().encode()))
    return bodies


def fill(url: str, exchange: str, routing_key: str, queue: str, bodies, admin_url: str | None = None) -> None:
    """Publish as `url`'s account, with its user_id, without waiting for confirms (the filling is not
    measured), then wait for the queue to hold them all (counted through `admin_url` when given: a
    publishing account may not look at another service's queue)."""
    user = pika.URLParameters(url).credentials.username
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        for message_id, body in bodies:
            channel.basic_publish(exchange, routing_key, body,
                                  bus.event_properties(message_id, routing_key, events.PATIENT_CONTACT_CHANGED, user))
    with pika.BlockingConnection(pika.URLParameters(admin_url or url)) as connection:
        channel = connection.channel()
        deadline = time.monotonic() + 120
        while channel.queue_declare(queue, passive=True).method.message_count < len(bodies):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{queue} never held the {len(bodies)} messages published")
            connection.sleep(0.05)


def raw_consume(url: str, queue: str, count: int, prefetch: int, bodies) -> Run:
    fill(url, "", queue, queue, bodies)
    done, marks = 0, []
    lap = max(1, count // 5)
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch)

        def on_message(ch, method, _properties, _body):
            nonlocal done
            ch.basic_ack(method.delivery_tag)
            done += 1
            if done % lap == 0:
                marks.append(time.perf_counter())
            if done >= count:
                ch.stop_consuming()

        channel.basic_consume(queue, on_message)
        connection.call_later(120, channel.stop_consuming)   # a short queue ends the step instead of hanging it
        started = time.perf_counter()
        channel.start_consuming()
        elapsed = time.perf_counter() - started
    return Run(done, elapsed, _fifths(started, marks, lap))


def _fifths(started: float, marks: list[float], lap: int) -> list[float]:
    times = [started, *marks]
    return [lap / (later - earlier) for earlier, later in itertools.pairwise(times) if later > earlier]


def applied(settings) -> float:
    return counted("clinic_messages_applied_total", settings)


def counted(metric: str, settings) -> float:
    return REGISTRY.get_sample_value(metric, {"service": settings.service, "event_type": events.PATIENT_CONTACT_CHANGED}) or 0.0


def consumer_run(stack: ExitStack, server_url: str, broker: Broker, namespace: str, count: int, prefetch: int, bodies,
                 profile: bool) -> Run:
    """One backlog through one Consumer, on notifications' account and a fresh notifications database;
    checked afterwards. (The runs share the namespace, whose exchange the accounts' topic permissions
    name, and so notifications' queue: each run leaves it empty.)"""
    database_url = fresh_database(stack, server_url, "bench_notifications")
    engine = create_engine(database_url)
    stack.callback(engine.dispose)
    migrate(engine, notifications_db.MIGRATIONS)
    settings = broker.settings_for("notifications", database_url=database_url, bus_namespace=namespace, prefetch=prefetch)
    handlers = make_handlers(load_mail_settings(env={}))
    bus.declare_consumer(settings, handlers)
    fill(broker.url_for("records"), settings.exchange, events.PATIENT_CONTACT_CHANGED, settings.queue, bodies, broker.url)

    consumer = Consumer(settings, engine, notifications_db.metadata, handlers)
    profiler = cProfile.Profile() if profile else None
    thread = threading.Thread(target=(lambda: profiler.runcall(consumer.run)) if profiler else consumer.run, daemon=True)
    before, dead_before = applied(settings), counted("clinic_messages_dead_lettered_total", settings)
    lap = max(1, count // 5)
    marks: list[float] = []
    thread.start()
    try:
        if not consumer.ready.wait(30):
            raise RuntimeError("the consumer did not connect")
        thread_cpu = time.pthread_getcpuclockid(thread.ident)
        started, cpu_started = time.perf_counter(), time.clock_gettime(thread_cpu)
        deadline = time.monotonic() + max(120, count / 50)
        while (done := applied(settings) - before) < count:
            while done >= lap * (len(marks) + 1):
                marks.append(time.perf_counter())
            if counted("clinic_messages_dead_lettered_total", settings) > dead_before:
                # e.g. refused for their publisher: the consumer's log says why.
                raise RuntimeError(f"the consumer dead-lettered events ({done:.0f} of {count} applied)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done:.0f} of {count} events applied")
            time.sleep(0.005)
        elapsed, cpu = time.perf_counter() - started, time.clock_gettime(thread_cpu) - cpu_started
    finally:
        consumer.stop()
        thread.join(timeout=30)
    check(engine, settings, count)
    if profiler:
        print(f"\nprofile of the consumer thread, prefetch {prefetch} (cumulative, top 30):")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    return Run(count, elapsed, _fifths(started, marks, lap), cpu)


def check(engine, settings, count: int) -> None:
    """One contact copy and one inbox row per event, and nothing left in the queue."""
    with engine.connect() as connection:
        contacts = connection.execute(sa.text("SELECT count(*) FROM contacts")).scalar_one()
        inbox = connection.execute(sa.text("SELECT count(*) FROM inbox")).scalar_one()
    with bus.connect(settings) as connection:
        left = connection.channel().queue_declare(settings.queue, passive=True).method.message_count
    if (contacts, inbox, left) != (count, count, 0):
        raise RuntimeError(f"after the run: {contacts} contact copies and {inbox} inbox rows for {count} events, {left} left in the queue")


def delete_bus_objects(settings) -> None:
    """Best effort: leave a shared broker as we found it."""
    try:
        with bus.connect(settings) as connection:
            channel = connection.channel()
            delays = [bus.delay_queue(settings, bus.delay_milliseconds(s)) for s in settings.retry_delays_seconds]
            for queue in (settings.queue, settings.dead_letter_queue, settings.unrouted_queue, *delays):
                channel.queue_delete(queue)
            for exchange in (settings.exchange, settings.unrouted_exchange, settings.dead_letter_exchange,
                             bus.retry_exchange(settings), bus.requeue_exchange(settings)):
                channel.exchange_delete(exchange)
    except bus.BROKER_ERRORS as exc:
        print(f"note: could not delete the benchmark's queues: {type(exc).__name__}", file=sys.stderr)


def measure(args, stack: ExitStack) -> None:
    directory = scratch_directory(stack, "clinic-bench-consumers-")
    namespace = f"bench-{uuid.uuid4().hex[:10]}"
    broker = start_rabbitmq(stack, directory, namespace)
    rabbit_url = broker.url
    server_url, postgres_source = start_postgres(stack, directory)
    prefetch = load_settings("notifications", env={}).prefetch
    # Removed with an administrator's account, whatever a run left.
    stack.callback(delete_bus_objects, load_settings("notifications", env={}).with_changes(
        rabbitmq_url=rabbit_url, bus_namespace=namespace))
    print(f"servers: {broker.source}; {postgres_source}")
    print(f"{describe_postgres(server_url)}; {os.cpu_count()} cores, Python {platform.python_version()}, pika {pika.__version__}")
    sys.stdout.flush()

    # The ceiling on the administrator's account: raw pika on a queue of its own, no event, no check;
    # nothing in consuming and acking depends on the account (the broker checks it once, at basic.consume).
    raw_queue = f"{namespace}.raw"
    with pika.BlockingConnection(pika.URLParameters(rabbit_url)) as connection:
        connection.channel().queue_declare(raw_queue, durable=True, arguments=QUORUM)
    stack.callback(lambda: _delete_queue(rabbit_url, raw_queue))
    bodies = contact_changes(max(args.events, args.single_events))
    raw = raw_consume(rabbit_url, raw_queue, args.events, prefetch, bodies[:args.events])
    batches = consumer_run(stack, server_url, broker, namespace, args.events, prefetch, bodies[:args.events], args.profile)
    single = consumer_run(stack, server_url, broker, namespace, args.single_events, 1, bodies[:args.single_events],
                          args.profile)

    size = len(bodies[0][1])
    rows = [
        ("raw consume + ack, quorum queue", f"{raw.rate:,.0f}", "1.00", "",
         f"{raw.count:,} msgs of {size} B, prefetch {prefetch}, ack each, {raw.seconds:.2f}s{raw.spread()}"),
        (f"Consumer, batches (prefetch {prefetch})", f"{batches.rate:,.0f}", f"{batches.rate / raw.rate:.2f}",
         f">= {TARGET:,}: {'met' if batches.rate >= TARGET else 'NOT met'}",
         f"{batches.count:,} contact changes, notifications' handlers, {batches.seconds:.2f}s{batches.spread()}; "
         f"{batches.per_event()}"),
        ("Consumer, one per transaction (prefetch 1)", f"{single.rate:,.0f}", f"{single.rate / raw.rate:.2f}", "",
         f"{single.count:,} contact changes, {single.seconds:.2f}s{single.spread()}; {single.per_event()}; "
         f"batches are {batches.rate / single.rate:.1f}x this"),
    ]
    print_table(("", "events/s", "ratio to raw", "target", "notes"), rows)


def _delete_queue(url: str, queue: str) -> None:
    try:
        with pika.BlockingConnection(pika.URLParameters(url)) as connection:
            connection.channel().queue_delete(queue)
    except bus.BROKER_ERRORS:
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10000, help="backlog for the raw and the batches rows (default 10000)")
    parser.add_argument("--single-events", type=int, default=10000, help="backlog for the one-per-transaction row (default 10000)")
    parser.add_argument("--profile", action="store_true", help="print a profile of each consumer thread")
    args = parser.parse_args(argv)
    if min(args.events, args.single_events) < 5:
        parser.error("backlogs must be at least 5 events")
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    with ExitStack() as stack:  # stops what was started and removes what was made, whatever happens
        measure(args, stack)
    print(f"\ntotal run time {time.perf_counter() - started:.1f}s (including starting and stopping any local servers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
