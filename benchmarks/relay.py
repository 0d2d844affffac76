"""How fast the outbox relay empties a filled outbox, beside the broker's publish ceilings of the same run.

  blocking-confirm ceiling   raw pika, one persistent message to a quorum queue, its confirm awaited
                             before the next (benchmarks/ceilings.py's row)
  unconfirmed ceiling        raw pika, the same messages with no confirms, timed until the queue holds
                             them all (ceilings.py's row): how fast the broker takes messages in
  relay before               the relay as it was before pipelining, rebuilt here: in one transaction,
                             take the advisory lock, select a batch FOR UPDATE, publish each row and wait
                             for its confirm (clinic.bus.Publisher), mark the batch, commit
  clinic.outbox.Relay.run    the relay as the workers run it, on a thread: a window of publishes in
                             flight, confirms taken as they come, marks in short transactions

Both relays publish a PostgreSQL outbox through the real topology (the events exchange, a service
quorum queue bound to every event), as records' relay: on records' own broker account, its events
under its own prefix, each with its user_id, which the broker checks with the account's topic
permissions on the run's exchange (benchmarks/servers.py). The ceilings run on an administrator's
account to the default exchange, which no service account may write to. The relay's figure counts from the commit of the filled outbox
to the mark of its last row (its broker connection is open beforehand, as in a running worker).
Target: >= 4,000 events/s for 10,000 rows.

Servers come from CLINIC_BENCH_RABBITMQ_URL / CLINIC_BENCH_POSTGRES_URL when set; otherwise they are
started from the local Debian packages and stopped at the end.

    .venv/bin/python benchmarks/relay.py [--rows 10000] [--before-rows 5000] [--ceiling-messages 5000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import clinic  # noqa: F401 - installed in the project's virtualenv
except ImportError:  # run with another interpreter: use the library from the source tree
    sys.path.insert(0, str(ROOT / "shared"))
sys.path.insert(0, str(ROOT))

import pika  # noqa: E402
import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402

from benchmarks.ceilings import (  # noqa: E402
    RELAYED_SERVICE,
    Figure,
    Stopwatch,
    delete_bus_objects,
    fill_outbox,
    make_body,
    print_table,
    raw_publish,
    raw_publish_unconfirmed,
)
from benchmarks.servers import describe_postgres, fresh_database, scratch_directory, start_postgres, start_rabbitmq  # noqa: E402
from clinic import bus  # noqa: E402
from clinic.db import create_engine, messaging_tables  # noqa: E402
from clinic.outbox import Relay, pending_count  # noqa: E402

TARGET = 4000.0
_LOCK_KEY = 0x6F7574626F78  # the relay's advisory lock, as clinic.outbox takes it


def reset(engine, settings) -> None:
    """An empty outbox and an empty service queue, so each step starts from the same place."""
    with engine.begin() as connection:
        connection.execute(sa.text("TRUNCATE outbox RESTART IDENTITY"))
    with bus.connect(settings) as connection:
        connection.channel().queue_purge(settings.queue)


def queue_holds(settings) -> int:
    with bus.connect(settings) as connection:
        return connection.channel().queue_declare(settings.queue, passive=True).method.message_count


def relay_before(settings, engine, outbox, count: int, body: str) -> Figure:
    """The relay before pipelining (clinic.outbox as of issue 13's report), driven the way its run() was."""
    publisher = bus.Publisher(settings)
    pending = (sa.select(outbox.c.position, outbox.c.event_type, outbox.c.event_id, outbox.c.body)
               .where(outbox.c.published_at.is_(None)).order_by(outbox.c.position)
               .limit(settings.relay_batch_size).with_for_update(skip_locked=True))
    try:
        fill_outbox(engine, outbox, count, body)
        watch = Stopwatch(count)
        watch.start()
        while watch.done < count:
            with engine.begin() as connection:
                connection.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_LOCK_KEY)))
                rows = connection.execute(pending).all()
                if not rows:
                    break
                for row in rows:
                    publisher.publish(row.event_type, row.event_id, row.body)   # returns once confirmed
                connection.execute(outbox.update().where(outbox.c.position.in_([row.position for row in rows]))
                                   .values(published_at=sa.func.now(), attempts=outbox.c.attempts + 1))
            watch.tick(len(rows))
        watch.stop()
    finally:
        publisher.close()
    left, held = pending_count(engine, outbox), queue_holds(settings)
    notes = f"{watch.done} events, batch {settings.relay_batch_size}, confirm awaited per event, in the transaction, {watch.summary()}"
    if left or held != count:
        notes += f"; WARNING {left} left unpublished, queue holds {held}"
    return Figure("relay before (blocking confirms)", watch.rate, "events/s", notes)


def published_so_far(service: str) -> float:
    return REGISTRY.get_sample_value("clinic_relay_published_total", {"service": service}) or 0.0


def relay_run(settings, engine, outbox, count: int, body: str) -> Figure:
    """Relay.run on a thread, as a worker runs it; timed from the commit of `count` rows to their last mark."""
    # A short idle wait, so the relay notices the filled outbox at once rather than up to 0.1 s later.
    relay = Relay(settings.with_changes(relay_idle_seconds=0.005), engine, outbox)
    thread = threading.Thread(target=relay.run, name="relay", daemon=True)
    thread.start()
    try:
        # One row first: the relay connects to the broker and takes its lock before the clock starts.
        first = published_so_far(settings.service)
        fill_outbox(engine, outbox, 1, body)
        give_up = time.monotonic() + 60
        while published_so_far(settings.service) < first + 1 and time.monotonic() < give_up:
            time.sleep(0.005)
        start = published_so_far(settings.service)

        fill_outbox(engine, outbox, count, body)   # one transaction: every row appears at once
        watch = Stopwatch(count)
        watch.start()
        give_up = time.monotonic() + 300
        while watch.done < count and time.monotonic() < give_up:
            time.sleep(0.001)
            done = int(published_so_far(settings.service) - start)
            if done > watch.done:
                watch.tick(done - watch.done)
        watch.stop()
    finally:
        relay.stop()
        thread.join(timeout=30)
    left, held = pending_count(engine, outbox), queue_holds(settings)
    notes = (f"{watch.done} events, window {settings.relay_window}, batch {settings.relay_batch_size}, "
             f"commit to last mark, {watch.summary()}")
    if left or held < count + 1:
        notes += f"; WARNING {left} left unpublished, queue holds {held}"
    return Figure("clinic.outbox.Relay.run (pipelined confirms)", watch.rate, "events/s", notes)


def measure(args, stack: ExitStack) -> list[Figure]:
    directory = scratch_directory(stack, "clinic-bench-relay-")
    namespace = f"bench-{uuid.uuid4().hex[:10]}"
    broker = start_rabbitmq(stack, directory, namespace)
    rabbit_url = broker.url
    server_url, postgres_source = start_postgres(stack, directory)
    database_url = fresh_database(stack, server_url, prefix="bench_relay")
    print(f"servers: {broker.source}; {postgres_source}")
    print(f"{describe_postgres(database_url)}; {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"pika {pika.__version__}, psycopg {psycopg.__version__}")
    sys.stdout.flush()

    settings = broker.settings_for(RELAYED_SERVICE, bus_namespace=namespace, database_url=database_url)
    confirmed_queue, unconfirmed_queue = f"{namespace}.confirmed", f"{namespace}.unconfirmed"
    stack.callback(
        delete_bus_objects, rabbit_url,
        [confirmed_queue, unconfirmed_queue, settings.queue, settings.dead_letter_queue, settings.unrouted_queue],
        [settings.exchange, settings.unrouted_exchange, settings.dead_letter_exchange],
    )
    body = make_body(args.body_bytes)
    with bus.connect(settings) as connection:
        # The real topology: the events exchange and a service quorum queue bound to every event.
        bus.declare_service_queue(connection.channel(), settings, ["#"])
    engine = create_engine(database_url)
    stack.callback(engine.dispose)
    metadata = sa.MetaData()
    outbox, _inbox = messaging_tables(metadata)
    metadata.create_all(engine)
    text_body = body.decode()

    # The unconfirmed ceiling is fast: as many messages as the relay's rows, so it lasts long enough to time.
    figures = [raw_publish(rabbit_url, confirmed_queue, args.ceiling_messages, body),
               raw_publish_unconfirmed(rabbit_url, unconfirmed_queue, args.rows, body)]
    if args.before_rows:
        reset(engine, settings)
        figures.append(relay_before(settings, engine, outbox, args.before_rows, text_body))
    reset(engine, settings)
    figures.append(relay_run(settings, engine, outbox, args.rows, text_body))
    return figures


def ratios(figures: list[Figure]) -> list[str]:
    by_name = {figure.name: figure.value for figure in figures}
    after = figures[-1].value
    lines = [f"relay / blocking-confirm ceiling: {after / by_name['pika publish, confirmed, quorum queue']:.2f}",
             f"relay / unconfirmed ceiling:      {after / by_name['pika publish, unconfirmed, quorum queue']:.2f}"]
    before = by_name.get("relay before (blocking confirms)")
    if before:
        lines.append(f"relay / relay before:            {after / before:.2f}")
    lines.append(f"target >= {TARGET:,.0f} events/s: {'met' if after >= TARGET else 'NOT met'} ({after:,.0f})")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10000, help="outbox rows for Relay.run (default 10000)")
    parser.add_argument("--before-rows", type=int, default=5000,
                        help="outbox rows for the relay before pipelining; 0 skips it (default 5000)")
    parser.add_argument("--ceiling-messages", type=int, default=5000,
                        help="messages for the blocking-confirm ceiling (default 5000; the unconfirmed one sends --rows)")
    parser.add_argument("--body-bytes", type=int, default=512, help="message and outbox body size (default 512)")
    args = parser.parse_args(argv)
    if min(args.rows, args.ceiling_messages) < 1 or args.before_rows < 0:
        parser.error("counts must be at least 1 (--before-rows 0 skips that row)")

    start = time.perf_counter()
    with ExitStack() as stack:  # stops what was started and removes what was made, whatever happens
        figures = measure(args, stack)
    print()
    print_table(figures)
    print()
    for line in ratios(figures):
        print(line)
    print(f"\ntotal run time {time.perf_counter() - start:.1f}s (including starting and stopping any local servers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
