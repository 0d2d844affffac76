"""The `clinic` command: development tokens, dead letters, migrations, the outbox's backlog.

  clinic token --role front_desk [--subject NAME]       a staff token for the running stack
  clinic dead-letters list SERVICE [--page N] [--per-page N]
                                                        what sits in clinic.<service>.dead, and why
  clinic dead-letters replay SERVICE [--limit N]        send it back to the service's queue, with fresh attempts
  clinic unrouted list [--page N] [--per-page N]        events no queue was bound to
  clinic unrouted replay [--limit N]                    publish them again, for the queues bound since
  clinic migrate SERVICE                                bring the service's database up to date, and
                                                        declare its queue and bindings when it consumes events
  clinic outbox status [SERVICE ...]                    each service's unpublished events and the age of the oldest

Listing leaves every message where it is. Settings come from the same environment variables as the
services (README).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

import pika.exceptions as pe

from clinic import auth, bus
from clinic.config import ConfigurationError, Settings, load_settings
from clinic.db import create_engine
from clinic.logs import one_line
from clinic.migrations import migrate
from clinic.ops import outbox_status

SERVICES = ("scheduling", "sessions", "records", "notifications")
PER_PAGE, MAX_PER_PAGE = 20, 200


def _page_number(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _per_page(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_PER_PAGE:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_PER_PAGE}")
    return value


def _list_and_replay_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--page", type=_page_number, default=1, help="which page to list (default 1)")
    parser.add_argument("--per-page", type=_per_page, default=PER_PAGE,
                        help=f"messages per page (default {PER_PAGE}, at most {MAX_PER_PAGE})")
    parser.add_argument("--limit", type=int, default=None, help="replay at most this many")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="clinic", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    token = commands.add_parser("token", help="print a staff bearer token")
    token.add_argument("--role", action="append", required=True, choices=auth.STAFF_ROLES, help="repeat for several roles")
    token.add_argument("--subject", default="dev-user", help="who the token is for (default: dev-user)")
    token.add_argument("--ttl-minutes", type=int, default=None)

    dead = commands.add_parser("dead-letters", help="list or replay a service's dead letters")
    dead.add_argument("action", choices=("list", "replay"))
    dead.add_argument("service", choices=SERVICES)
    _list_and_replay_options(dead)

    unrouted = commands.add_parser("unrouted", help="list events no queue was bound to, or publish them again")
    unrouted.add_argument("action", choices=("list", "replay"))
    _list_and_replay_options(unrouted)

    mig = commands.add_parser("migrate", help="apply a service's database migrations and declare its queue")
    mig.add_argument("service", choices=SERVICES)

    outbox = commands.add_parser("outbox", help="how many events wait in each service's outbox to be published")
    outbox.add_argument("action", choices=("status",))
    # No `choices` here: with nargs="*" an empty list would fail the check; names are checked below.
    outbox.add_argument("services", nargs="*", metavar="SERVICE", help="default: every service (name one where DATABASE_URL is set)")

    args = parser.parse_args(argv)
    try:
        if args.command == "token":
            settings = load_settings("cli")
            settings.check_safe_to_run()
            print(auth.issue_token(settings, args.subject, args.role, args.ttl_minutes))
        elif args.command == "dead-letters":
            settings = load_settings(args.service)
            if args.action == "list":
                list_dead_letters(settings, args.page, args.per_page)
            else:
                print(f"replayed {replay_dead_letters(settings, args.limit)} message(s) to {settings.queue}")
        elif args.command == "unrouted":
            settings = load_settings("cli")
            if args.action == "list":
                list_unrouted(settings, args.page, args.per_page)
            else:
                print(f"published {replay_unrouted(settings, args.limit)} event(s) to {settings.exchange} again")
        elif args.command == "migrate":
            return migrate_service(args.service)
        elif args.command == "outbox":
            unknown = sorted(set(args.services) - set(SERVICES))
            if unknown:
                parser.error("unknown service: " + ", ".join(unknown))
            outbox_status(args.services or SERVICES)
    except ConfigurationError as exc:
        print(f"clinic: {exc}", file=sys.stderr)
        return 2
    except bus.BROKER_ERRORS as exc:
        print(f"clinic: {_broker_trouble(exc)}", file=sys.stderr)
        return 1
    return 0


def _broker_trouble(exc: BaseException) -> str:
    if isinstance(exc, pe.ChannelClosedByBroker):
        # The broker's own words name a queue or an argument, never a message's content.
        return f"RabbitMQ refused: {exc.reply_text}"
    return f"RabbitMQ is not reachable ({type(exc).__name__})"


def migrate_service(service: str) -> int:
    """Bring the service's database to the latest revision, then declare its queue, its bindings, its
    retry delay queues and its dead letters (when it consumes anything), so events published before its
    worker first runs wait for it. A broker that cannot be reached is an error once the database is done."""
    settings = load_settings(service)
    migrate(create_engine(settings.database_url), importlib.import_module(f"{service}.db").MIGRATIONS)
    print(f"{service}: database at the latest revision")
    consumed = importlib.import_module(f"{service}.worker").handlers(settings)
    if not consumed:
        return 0
    try:
        bus.declare_consumer(settings, consumed)
    except bus.BROKER_ERRORS as exc:
        print(f"clinic: {service}'s database is migrated, but its queue {settings.queue} is not declared: "
              f"{_broker_trouble(exc)}. Run `clinic migrate {service}` again once it is.", file=sys.stderr)
        return 1
    print(f"{service}: queue {settings.queue} declared, bound to {len(consumed)} event type(s)")
    return 0


def _envelope(body: bytes) -> dict:
    """The envelope's fields that say which event it is; never its data, which may hold patient data."""
    try:
        envelope = json.loads(body)
    except ValueError:
        return {}
    return envelope if isinstance(envelope, dict) else {}


def original_routing_key(method, properties, settings: Settings) -> str:
    """The routing key the event was published with. The consumer's dead letters and retries keep it;
    one dead-lettered by the queue's delivery limit carries the queue's name instead, and its x-death
    says what it was."""
    headers = properties.headers or {}
    if headers.get(bus.STEP_HEADER) == bus.DEAD_STEP:
        return method.routing_key
    for death in headers.get("x-death") or []:
        if isinstance(death, dict) and death.get("queue") == settings.queue and death.get("routing-keys"):
            return str(death["routing-keys"][0])
    return properties.type or method.routing_key


def _death_in(headers: dict, queue: str) -> dict:
    """The broker's x-death entry for `queue` (e.g. its delivery limit), else its latest one."""
    deaths = [death for death in headers.get("x-death") or [] if isinstance(death, dict)]
    return next((death for death in deaths if death.get("queue") == queue), deaths[0] if deaths else {})


def describe_dead_letter(settings: Settings, method, properties, body: bytes) -> dict:
    """What an operator needs to decide on a dead letter: which event, why it is there, how often it
    was tried and when it gave up; no payload."""
    headers = properties.headers or {}
    envelope = _envelope(body)
    death = _death_in(headers, settings.queue)
    when = headers.get(bus.DEAD_AT_HEADER) or death.get("time")
    return {
        "id": properties.message_id or envelope.get("id"),
        "type": properties.type or envelope.get("type"),
        "routing_key": original_routing_key(method, properties, settings),
        "attempts": headers.get(bus.ATTEMPTS_HEADER, headers.get("x-delivery-count")),
        "when": when.isoformat() if hasattr(when, "isoformat") else when,
        # From the delivery limit's net (a worker that crashed on it every time), the broker's reason.
        "reason": headers.get(bus.REASON_HEADER) or death.get("reason"),
        "exception": headers.get(bus.EXCEPTION_HEADER) or None,
        "message": headers.get(bus.ERROR_HEADER) or None,
    }


def describe_unrouted(_settings: Settings, method, properties, body: bytes) -> dict:
    envelope = _envelope(body)
    return {
        "id": properties.message_id or envelope.get("id"),
        "type": properties.type or envelope.get("type"),
        "routing_key": method.routing_key,
        "version": envelope.get("version"),
        "occurred_at": envelope.get("occurred_at"),
        "producer": envelope.get("producer"),
    }


def list_messages(settings: Settings, queue: str, what: str, describe, page: int = 1, per_page: int = PER_PAGE) -> list[dict]:
    """Print and return one page of a queue's messages (described by `describe`), leaving them all in
    place: they are taken without an ack, handed back, and the queue is seen to hold them again before
    this returns (the next page, listed at once, then starts where this one ended)."""
    connection = bus.connect(settings)
    try:
        channel = connection.channel()
        try:
            total = channel.queue_declare(queue, passive=True).method.message_count
        except pe.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            print(f"{queue} does not exist (yet): no {what}")
            return []
        rows, skip = [], (page - 1) * per_page
        for taken in range(skip + per_page):
            method, properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            if taken >= skip:
                rows.append(describe(settings, method, properties, body))
        # Closing the channel hands them back in their place at the head of the queue (a nack with
        # requeue would send a quorum queue's messages to its tail, and reorder the pages).
        channel.close()
        _wait_for_depth(connection, queue, total)
    finally:
        if connection.is_open:
            connection.close()
    pages = max(1, -(-total // per_page))
    print(f"{total} {what} in {queue}; page {page} of {pages}, {per_page} per page")
    for row in rows:
        print("  " + "  ".join(f"{key}={_shown(value)}" for key, value in row.items()))
    return rows


def _wait_for_depth(connection, queue: str, depth: int, timeout: float = 5.0) -> None:
    """Wait (a little) until the queue holds `depth` ready messages again: the broker puts messages
    handed back in place a moment after the channel closed. One that expired meanwhile never comes
    back, hence the timeout."""
    channel = connection.channel()
    deadline = time.monotonic() + timeout
    while channel.queue_declare(queue, passive=True).method.message_count < depth and time.monotonic() < deadline:
        connection.sleep(0.02)


def _shown(value) -> str:
    if value is None or value == "":
        return "-"
    text = one_line(str(value))
    return json.dumps(text) if " " in text else text


def list_dead_letters(settings: Settings, page: int = 1, per_page: int = PER_PAGE) -> list[dict]:
    return list_messages(settings, settings.dead_letter_queue, "dead letter(s)", describe_dead_letter, page, per_page)


def list_unrouted(settings: Settings, page: int = 1, per_page: int = PER_PAGE) -> list[dict]:
    return list_messages(settings, settings.unrouted_queue, "unrouted event(s)", describe_unrouted, page, per_page)


def replay_dead_letters(settings: Settings, limit: int | None = None) -> int:
    """Move dead letters back to the service's own queue (only that service sees them again), each
    with its original routing key and fresh attempts: the expiries counted so far are written in a
    header, and the consumer counts from there.

    Only the messages there when the move starts: one that dies again is not moved again in a loop."""
    connection = bus.connect(settings)
    try:
        channel = connection.channel()
        requeue = bus.requeue_exchange(settings)
        # As the consumer declares them: a dead letter from before the retry topology finds its way back.
        channel.exchange_declare(requeue, exchange_type="headers", durable=True)
        channel.queue_bind(settings.queue, requeue, arguments=bus.requeue_binding(settings))
        channel.confirm_delivery()
        waiting = channel.queue_declare(settings.dead_letter_queue, passive=True).method.message_count
        limit = waiting if limit is None else min(limit, waiting)
        moved = 0
        while moved < limit:
            method, properties, body = channel.basic_get(settings.dead_letter_queue, auto_ack=False)
            if method is None:
                break
            headers = {bus.QUEUE_HEADER: settings.queue,
                       bus.REPLAYED_AFTER_HEADER: bus.expiries(properties.headers, settings, since_replay=False)}
            # Confirmed (and routed: mandatory) before the dead letter is taken off its queue.
            channel.basic_publish(requeue, original_routing_key(method, properties, settings), body,
                                  bus.forwarded(properties, **headers), mandatory=True)
            channel.basic_ack(method.delivery_tag)
            moved += 1
    finally:
        if connection.is_open:
            connection.close()
    return moved


def replay_unrouted(settings: Settings, limit: int | None = None) -> int:
    """Publish unrouted events to the exchange again, for the queues bound since (a consumer that
    started after its first events were published). Only those there when it starts; one still
    unrouted comes back to the queue and is not moved again in a loop."""
    publisher = bus.Publisher(settings)
    channel = publisher.connection.channel()
    waiting = channel.queue_declare(settings.unrouted_queue, passive=True).method.message_count
    limit = waiting if limit is None else min(limit, waiting)
    moved = 0
    try:
        while moved < limit:
            method, properties, body = channel.basic_get(settings.unrouted_queue, auto_ack=False)
            if method is None:
                break
            publisher.publish(properties.type or method.routing_key, properties.message_id, body, message_type=properties.type)
            channel.basic_ack(method.delivery_tag)
            moved += 1
    finally:
        publisher.close()
    return moved


if __name__ == "__main__":
    sys.exit(main())
