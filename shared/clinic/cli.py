"""The `clinic` command: development tokens, dead letters, migrations.

  clinic token --role front_desk [--subject NAME]       a staff token for the running stack
  clinic dead-letters list SERVICE                      what sits in clinic.<service>.dead
  clinic dead-letters replay SERVICE [--limit N]        send it back to the service's queue
  clinic unrouted list|replay [--limit N]               events no queue was bound to: see them, publish them again
  clinic migrate SERVICE                                bring the service's database up to date

Settings come from the same environment variables as the services (README).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from clinic import auth, bus
from clinic.config import ConfigurationError, load_settings
from clinic.db import create_engine
from clinic.migrations import migrate

SERVICES = ("scheduling", "sessions", "records", "notifications")


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
    dead.add_argument("--limit", type=int, default=None, help="replay at most this many")

    unrouted = commands.add_parser("unrouted", help="list events no queue was bound to, or publish them again")
    unrouted.add_argument("action", choices=("list", "replay"))
    unrouted.add_argument("--limit", type=int, default=None, help="replay at most this many")

    mig = commands.add_parser("migrate", help="apply a service's database migrations")
    mig.add_argument("service", choices=SERVICES)

    args = parser.parse_args(argv)
    try:
        if args.command == "token":
            settings = load_settings("cli")
            settings.check_safe_to_run()
            print(auth.issue_token(settings, args.subject, args.role, args.ttl_minutes))
        elif args.command == "dead-letters":
            settings = load_settings(args.service)
            if args.action == "list":
                list_dead_letters(settings)
            else:
                print(f"replayed {replay_dead_letters(settings, args.limit)} message(s) to {settings.queue}")
        elif args.command == "unrouted":
            settings = load_settings("cli")
            if args.action == "list":
                list_unrouted(settings)
            else:
                print(f"published {replay_unrouted(settings, args.limit)} event(s) to {settings.exchange} again")
        elif args.command == "migrate":
            settings = load_settings(args.service)
            db_module = importlib.import_module(f"{args.service}.db")
            migrate(create_engine(settings.database_url), db_module.MIGRATIONS)
            print(f"{args.service}: database at the latest revision")
    except ConfigurationError as exc:
        print(f"clinic: {exc}", file=sys.stderr)
        return 2
    except bus.BROKER_ERRORS as exc:
        print(f"clinic: RabbitMQ is not reachable ({type(exc).__name__})", file=sys.stderr)
        return 1
    return 0


def _summary(body: bytes, properties) -> dict:
    """What an operator needs to decide on a dead letter: no payload, which may hold patient data."""
    try:
        envelope = json.loads(body)
    except ValueError:
        envelope = {}
    deaths = (properties.headers or {}).get("x-death") or [{}]
    return {
        "id": properties.message_id or envelope.get("id"),
        "type": properties.type or envelope.get("type"),
        "version": envelope.get("version"),
        "occurred_at": envelope.get("occurred_at"),
        "reason": deaths[0].get("reason"),
        "deliveries": (properties.headers or {}).get("x-delivery-count"),
    }


def list_messages(settings, queue: str, what: str) -> list[dict]:
    """Print and return a summary of every message in a queue, leaving them all in place."""
    connection = bus.connect(settings)
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        rows = []
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            rows.append(_summary(body, properties))
        # Not acked: closing the channel returns every message to the queue.
    finally:
        connection.close()
    print(f"{len(rows)} {what} in {queue}")
    for row in rows:
        print("  " + "  ".join(f"{key}={value}" for key, value in row.items()))
    return rows


def list_dead_letters(settings) -> list[dict]:
    return list_messages(settings, settings.dead_letter_queue, "dead letter(s)")


def list_unrouted(settings) -> list[dict]:
    return list_messages(settings, settings.unrouted_queue, "unrouted event(s)")


def _move(settings, source: str, exchange: str, routing_key_of, limit: int | None) -> int:
    """Publish a queue's messages again (confirmed), then take each off the queue.

    Only the messages there when the move starts: one that comes back (dies again, or is still
    unrouted) is not moved again in a loop.
    """
    publisher = bus.Publisher(settings)
    channel = publisher.connection.channel()
    waiting = channel.queue_declare(source, passive=True).method.message_count
    limit = waiting if limit is None else min(limit, waiting)
    moved = 0
    try:
        while moved < limit:
            method, properties, body = channel.basic_get(source, auto_ack=False)
            if method is None:
                break
            publisher.publish(routing_key_of(properties), properties.message_id, body, exchange=exchange, message_type=properties.type)
            channel.basic_ack(method.delivery_tag)
            moved += 1
    finally:
        publisher.close()
    return moved


def replay_dead_letters(settings, limit: int | None = None) -> int:
    """Move dead letters back to the service's own queue (only that service sees them again)."""
    return _move(settings, settings.dead_letter_queue, "", lambda _properties: settings.queue, limit)


def replay_unrouted(settings, limit: int | None = None) -> int:
    """Publish unrouted events to the exchange again, for the queues bound since (a consumer that
    started after its first events were published)."""
    return _move(settings, settings.unrouted_queue, settings.exchange, lambda properties: properties.type, limit)


if __name__ == "__main__":
    sys.exit(main())
