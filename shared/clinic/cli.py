"""The `clinic` command: development tokens, dead letters, migrations, the outbox's backlog.

Past 500 lines: each command is short, and they share one argument parser and one way of
saying that the broker or the configuration is not right.

  clinic token --role front_desk [--subject NAME] [--ttl-minutes N] [--audience A ...]
                                                        a development staff token for the running stack
  clinic dead-letters list SERVICE [--page N] [--per-page N]
                                                        what sits in clinic.<service>.dead, and why
  clinic dead-letters replay SERVICE [--limit N]        send it back to the service's queue, with fresh attempts
  clinic unrouted list [--page N] [--per-page N]        events no queue was bound to
  clinic unrouted replay [--limit N]                    publish them again, for the queues bound since
  clinic migrate SERVICE                                bring the service's database up to date, and
                                                        declare its queue and bindings when it consumes events
  clinic outbox status [SERVICE ...]                    each service's unpublished events and the age of the oldest
  clinic broker-definitions [--out FILE]                the broker accounts as RabbitMQ definitions, to load at boot
  clinic check-secrets                                  production: refuse any *_PASSWORD still from the example file
  clinic seed-demo                                      the demo clinic make run seeds on its first start (development only)
  clinic simulate-monitors [--every SECONDS]            the demo's bedside monitors posting vital signs (development only)

Replays keep each message's routing key and publisher (its AMQP user_id): the broker lets only the
operations account (tagged impersonator, CLINIC_OPERATOR_RABBITMQ_URL) publish as another account.
Listings and replays connect as that account whenever CLINIC_OPERATOR_RABBITMQ_URL is set (else as
RABBITMQ_URL's): `make run`'s broker has no other account that may read every service's queues.

Listing leaves every message where it is; pages are in the order the messages died (dead letters) or
occurred (unrouted events), then by message id. Settings come from the same environment variables as the
services (README).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from datetime import datetime, timezone

import pika.exceptions as pe

from clinic import auth, broker_accounts, bus
from clinic.config import (
    OPERATOR_ACCOUNT,
    SERVICES,
    ConfigurationError,
    Settings,
    check_deploy_secrets,
    load_demo_settings,
    load_settings,
    read_broker_passwords,
)
from clinic.db import create_engine, is_transient
from clinic.files import write_atomically
from clinic.logs import one_line
from clinic.migrations import grant_service_role, migrate, wait_for, where
from clinic.ops import outbox_status

PER_PAGE, MAX_PER_PAGE = 20, 200
# A listing reads at most this many messages of a queue (and says so when there are more).
READ_AT_MOST = 10_000


def _one_or_more(text: str) -> int:
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
    parser.add_argument("--page", type=_one_or_more, default=1, help="which page to list (default 1)")
    parser.add_argument("--per-page", type=_per_page, default=PER_PAGE,
                        help=f"messages per page (default {PER_PAGE}, at most {MAX_PER_PAGE})")
    parser.add_argument("--limit", type=_one_or_more, default=None, help="replay at most this many (1 or more)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="clinic", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    token = commands.add_parser("token", help="print a development staff bearer token (development and test only)")
    token.add_argument("--role", action="append", required=True, choices=auth.STAFF_ROLES, help="repeat for several roles")
    token.add_argument("--subject", default="dev-user", help="who the token is for (default: dev-user)")
    token.add_argument("--ttl-minutes", type=int, default=None,
                       help="how long it lives, 1 to CLINIC_TOKEN_MAX_LIFETIME_MINUTES (default: that maximum)")
    token.add_argument("--audience", action="append", default=None,
                       help="a service audience, repeat for several (default: every service's, for the whole demo)")

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

    definitions = commands.add_parser("broker-definitions", help="print the broker accounts as RabbitMQ definitions")
    definitions.add_argument("--out", default=None, help="write them to this file (mode 0600) instead of stdout")

    commands.add_parser("check-secrets", help="refuse, in production, any *_PASSWORD variable left at its example value")

    commands.add_parser("seed-demo", help="seed the demo clinic through the apps' APIs (make run does, on its first start)")
    simulate = commands.add_parser("simulate-monitors", help="the demo's monitors post vital signs for the started sessions")
    simulate.add_argument("--every", type=float, default=5.0, help="seconds between two readings of one monitor (default 5)")

    args = parser.parse_args(argv)
    try:
        if args.command == "token":
            return print_development_token(args)
        elif args.command == "dead-letters":
            settings = as_operator(load_settings(args.service))
            if args.action == "list":
                list_dead_letters(settings, args.page, args.per_page)
            else:
                print(f"replayed {replay_dead_letters(settings, args.limit)} message(s) to {settings.queue}")
        elif args.command == "unrouted":
            settings = as_operator(load_settings("cli"))
            if args.action == "list":
                list_unrouted(settings, args.page, args.per_page)
            else:
                print(f"published {replay_unrouted(settings, args.limit)} event(s) to {settings.exchange} again")
        elif args.command == "broker-definitions":
            write_broker_definitions(load_settings("cli"), args.out)
        elif args.command == "check-secrets":
            print(f"clinic: {len(check_deploy_secrets(os.environ))} passwords checked", file=sys.stderr)
        elif args.command == "migrate":
            return migrate_service(args.service)
        elif args.command in ("seed-demo", "simulate-monitors"):
            return run_demo(args)
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


def print_development_token(args) -> int:
    """Sign a token with the development key pair that the services' development JWKS file publishes."""
    settings = load_settings("cli")
    if settings.environment not in ("development", "test"):
        print("clinic: `clinic token` signs development tokens, refused when CLINIC_ENV is production: "
              "staff sign in with the identity provider there", file=sys.stderr)
        return 2
    # Every service's audience as it reads it (clinic-<service>, or CLINIC_OIDC_AUDIENCE when set), in order.
    audiences = args.audience or list(dict.fromkeys(load_settings(service).oidc_audience for service in SERVICES))
    try:
        print(auth.issue_token(settings, args.subject, args.role, args.ttl_minutes, audience=audiences))
    except ValueError as exc:
        print(f"clinic: {exc}", file=sys.stderr)
        return 2
    return 0


def run_demo(args) -> int:
    """`clinic seed-demo` and `clinic simulate-monitors` (clinic.demo, clinic.monitors): development only,
    and off with CLINIC_DEMO=off."""
    from clinic import demo

    settings = load_demo_settings()
    if settings.environment == "production":
        print(f"clinic: `clinic {args.command}` is the development demo, refused when CLINIC_ENV is production: "
              "it would write made-up patients and readings into the clinic's records", file=sys.stderr)
        return 2
    if not settings.enabled:
        print(f"clinic: CLINIC_DEMO=off: no demo clinic, `clinic {args.command}` does nothing")
        return 0
    if args.command == "seed-demo":
        if demo.seeded_today(settings, os.environ):
            print(f"demo clinic seeded today ({demo.marker_path(settings)}): nothing to do")
            return 0
        try:
            demo.seed(settings)
        except (demo.DemoError, ValueError) as exc:
            print(f"clinic: the demo clinic is not (fully) seeded: {exc}. The next `clinic seed-demo` tries again.",
                  file=sys.stderr)
            return 1
        return 0
    return simulate_monitors(settings, args.every)


def simulate_monitors(settings, every: float) -> int:
    """Run the simulated monitors until SIGINT or SIGTERM."""
    import logging
    import signal
    import threading

    from clinic.logs import configure_logging
    from clinic.monitors import Simulator

    configure_logging(load_settings("monitors"))
    logging.getLogger("clinic.monitors").setLevel(logging.INFO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    Simulator(settings, every=max(1.0, every)).run(stop)
    return 0


def _broker_trouble(exc: BaseException) -> str:
    if isinstance(exc, pe.ChannelClosedByBroker):
        # The broker's own words name a queue or an argument, never a message's content.
        if "user_id" in str(exc.reply_text):
            return (f"RabbitMQ refused: {exc.reply_text}. A replay publishes as the message's original publisher, "
                    f"which only the operations account ({OPERATOR_ACCOUNT}, tagged impersonator) may: set "
                    "CLINIC_OPERATOR_RABBITMQ_URL to its URL")
        return f"RabbitMQ refused: {exc.reply_text}"
    if isinstance(exc, (pe.ProbableAuthenticationError, pe.AuthenticationError, pe.ProbableAccessDeniedError)):
        return (f"RabbitMQ refused the login ({type(exc).__name__}): listings and replays connect as the operations "
                f"account ({OPERATOR_ACCOUNT}); set CLINIC_OPERATOR_RABBITMQ_URL to its URL (make run's banner prints "
                "the line to export)")
    return f"RabbitMQ is not reachable ({type(exc).__name__})"


def as_operator(settings: Settings) -> Settings:
    """The settings on the operations account's connection when CLINIC_OPERATOR_RABBITMQ_URL is set."""
    if settings.operator_rabbitmq_url:
        return settings.with_changes(rabbitmq_url=settings.operator_rabbitmq_url)
    return settings


def write_broker_definitions(settings: Settings, out: str | None) -> None:
    """The accounts of every service and the operations account, with passwords from
    CLINIC_BROKER_PASSWORD_<ACCOUNT>, as a definitions document RabbitMQ loads at boot."""
    accounts = broker_accounts.all_accounts(settings, SERVICES)
    passwords = read_broker_passwords(os.environ, accounts)
    text = json.dumps(broker_accounts.broker_definitions(settings, passwords, SERVICES), indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    write_atomically(out, text)  # password hashes: readable by its owner only, even over an existing file
    print(f"broker definitions for {len(accounts)} accounts written to {out}", file=sys.stderr)


def migrate_service(service: str) -> int:
    """Bring the service's database to the latest revision, grant the service's login role
    (CLINIC_DATABASE_SERVICE_ROLE, when set) what it needs, then declare its queue, its bindings, its
    retry delay queues and its dead letters (when it consumes anything), so events published before its
    worker first runs wait for it. It waits for the database, then for the broker, to answer, each at most
    CLINIC_MIGRATE_WAIT_SECONDS. A broker that cannot be reached is an error once the database is done.
    Production's refusals first, as the service's own processes would refuse to start: a migration on
    a default database or broker account would change what no service of the clinic uses."""
    settings = load_settings(service)
    settings.check_safe_to_run()
    settings.check_service_role()
    engine = create_engine(settings.database_url, deadline_seconds=None)

    def migrated() -> None:
        migrate(engine, importlib.import_module(f"{service}.db").MIGRATIONS)
        if settings.database_service_role:
            grant_service_role(engine, settings.database_service_role)

    try:
        # The migration and the grants are what is tried again, as one (each run leaves the same end): a
        # database still starting, or a container network whose names do not resolve for a moment part-way,
        # is waited out; a migration that fails on its own is not.
        wait_for(f"the database at {where(settings.database_url)}", migrated, settings.migrate_wait_seconds,
                 passing=is_transient)
    finally:
        engine.dispose()
    print(f"{service}: database at the latest revision")
    if settings.database_service_role:
        print(f"{service}: {settings.database_service_role} may use the service's tables (audit_log: read and add only)")
    consumed = importlib.import_module(f"{service}.worker").handlers(settings)
    if not consumed:
        return 0
    try:
        # The declaring itself is what is tried again (it changes nothing the second time): a broker still
        # starting, or a container network whose names do not resolve for a moment, is waited out. A broker
        # that refuses the account is not: that is a setting to fix, not a start-up.
        wait_for(f"the broker at {where(settings.rabbitmq_url)}", lambda: bus.declare_consumer(settings, consumed),
                 settings.migrate_wait_seconds,
                 passing=lambda exc: isinstance(exc, bus.BROKER_ERRORS) and not isinstance(
                     exc, (pe.ProbableAuthenticationError, pe.ProbableAccessDeniedError)))
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
    headers = _headers(properties)
    if headers.get(bus.STEP_HEADER) == bus.DEAD_STEP:
        return method.routing_key
    for death in bus.deaths(headers):
        keys = bus.routing_keys_of(death)
        if death["queue"] == settings.queue and keys:
            return keys[0]
    return properties.type or method.routing_key


def _headers(properties) -> dict:
    return properties.headers if isinstance(properties.headers, dict) else {}


def _death_in(headers: dict, queue: str) -> dict:
    """The broker's x-death entry for `queue` (e.g. its delivery limit), else its latest one."""
    deaths = bus.deaths(headers)
    return next((death for death in deaths if death["queue"] == queue), deaths[0] if deaths else {})


def describe_dead_letter(settings: Settings, method, properties, body: bytes) -> dict:
    """What an operator needs to decide on a dead letter: which event, why it is there, how often it
    was tried and when it gave up; no payload.

    The consumer's own dead letters (x-clinic-step "dead") say why in their headers. Any other was
    dead-lettered by the broker (the queue's delivery limit: a worker that crashed on it every time),
    and its x-death says why and when; its attempts are the retries counted there, plus the last
    round. The delivery count the broker adds is never shown: listing itself counts as a delivery."""
    headers = _headers(properties)
    envelope = _envelope(body)
    death = _death_in(headers, settings.queue)
    if headers.get(bus.STEP_HEADER) == bus.DEAD_STEP:
        attempts = headers.get(bus.ATTEMPTS_HEADER)
        attempts = attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else None
        when, reason = headers.get(bus.DEAD_AT_HEADER), headers.get(bus.REASON_HEADER)
        exception, message = headers.get(bus.EXCEPTION_HEADER), headers.get(bus.ERROR_HEADER)
    else:
        attempts = bus.expiries(headers, settings) + 1 if death else None
        when, reason, exception, message = death.get("time"), death.get("reason"), None, None
    return {
        "id": properties.message_id or envelope.get("id"),
        "type": properties.type or envelope.get("type"),
        "routing_key": original_routing_key(method, properties, settings),
        "attempts": attempts,
        "when": when.isoformat() if isinstance(when, datetime) else when,
        "reason": reason or None,
        "exception": exception or None,
        "message": message or None,
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


def _moment(value) -> datetime | None:
    """An ISO 8601 time (as the headers and envelopes write it) as an aware datetime; None when it is not one."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _in_order(when_field: str):
    """A sort key over described rows: by the time in `when_field` (rows without one last), then by
    message id, then by everything else shown, so that the same messages give the same pages however
    the queue holds them."""
    def key(row: dict):
        moment = _moment(row.get(when_field))
        return (moment is None, moment or _EPOCH, str(row.get("id") or ""), json.dumps(row, sort_keys=True, default=str))
    return key


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def list_messages(settings: Settings, queue: str, what: str, describe, page: int = 1, per_page: int = PER_PAGE,
                  order=None) -> list[dict]:
    """Print and return one page of a queue's messages (described by `describe`, sorted by `order`),
    leaving them all in place.

    The queue is read once, up to READ_AT_MOST messages, without an ack, and they are handed back by
    closing the channel: a quorum queue does not keep the place of messages handed back, so each listing finds
    them in another order, and the pages come from the messages sorted, not from the queue's order."""
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
        rows = []
        # Only as many as there are now: under a steady flow (the unrouted queue) reading would not end.
        wanted = min(total, READ_AT_MOST)
        if wanted:
            # Consumed rather than fetched one by one: basic.get costs a round trip each (some 3 ms on a
            # quorum queue, half a minute for 10,000). The prefetch limit keeps the rest where they are.
            channel.basic_qos(prefetch_count=wanted)
            # One that expired meanwhile never arrives: a second with nothing ends the reading.
            for method, properties, body in channel.consume(queue, auto_ack=False, inactivity_timeout=1.0):
                if method is None:
                    break
                rows.append(_described(describe, settings, method, properties, body))
                if len(rows) >= wanted:
                    break
        channel.close()
        _wait_for_depth(connection, queue, total)
    finally:
        if connection.is_open:
            connection.close()
    if order is not None:
        rows.sort(key=order)
    pages = max(1, -(-len(rows) // per_page))
    shown = rows[(page - 1) * per_page:page * per_page]
    if total > READ_AT_MOST:
        print(f"{total} {what} in {queue}: only the first {READ_AT_MOST} read (at most that many are), "
              f"and the pages are of those")
    else:
        print(f"{len(rows)} {what} in {queue}")
    if page > pages:
        print(f"page {page} is past the end: {pages} page(s) of {per_page}")
    else:
        print(f"page {page} of {pages}, {per_page} per page")
    for row in shown:
        print("  " + "  ".join(f"{key}={_shown(value)}" for key, value in row.items()))
    return shown


def _described(describe, settings: Settings, method, properties, body: bytes) -> dict:
    """describe(...), or, for a message it cannot describe, a row that says so: one odd message does not
    hide the others."""
    try:
        return describe(settings, method, properties, body)
    except Exception as exc:  # noqa: BLE001 - whatever a stranger's message holds
        return {"id": properties.message_id, "problem": f"could not be described ({type(exc).__name__})"}


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
    """One page of the service's dead letters, in the order they died (then by message id)."""
    return list_messages(settings, settings.dead_letter_queue, "dead letter(s)", describe_dead_letter, page, per_page,
                         order=_in_order("when"))


def list_unrouted(settings: Settings, page: int = 1, per_page: int = PER_PAGE) -> list[dict]:
    """One page of the events no queue was bound to, in the order they occurred (then by message id)."""
    return list_messages(settings, settings.unrouted_queue, "unrouted event(s)", describe_unrouted, page, per_page,
                         order=_in_order("occurred_at"))


def replay_dead_letters(settings: Settings, limit: int | None = None) -> int:
    """Move dead letters back to the service's own queue (only that service sees them again), each
    with its original routing key, its original publisher (user_id, and the header the consumer
    believes in what comes through its requeue exchange) and fresh attempts: the expiries counted so
    far are written in a header, and the consumer counts from there. Publishing as another account
    needs the operations account: the broker refuses it to any other.

    Only the messages there when the move starts: one that dies again is not moved again in a loop.
    One that cannot be sent back as it is (headers no client could have meant) is skipped with a
    line on stderr and left where it is."""
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
        moved = taken = 0
        while moved < limit and taken < waiting:
            method, properties, body = channel.basic_get(settings.dead_letter_queue, auto_ack=False)
            if method is None:
                break
            taken += 1
            publisher = bus.vouched_publisher(settings, method.exchange, properties)
            if not publisher:
                # Left unacked: it goes back to the dead letters when the channel closes.
                print(f"clinic: dead letter {_shown(properties.message_id)} skipped: nothing the broker vouches for "
                      "says who published it, and the consumer would refuse it", file=sys.stderr)
                continue
            try:
                routing_key = original_routing_key(method, properties, settings)
                sent = bus.forwarded(properties, **{
                    bus.QUEUE_HEADER: settings.queue,
                    bus.PUBLISHER_HEADER: publisher,
                    bus.REPLAYED_AFTER_HEADER: bus.expiries(properties.headers, settings, since_replay=False)})
                sent.user_id = publisher
                sent.encode()   # what pika could not send fails here, before anything is sent
            except Exception as exc:  # noqa: BLE001 - one odd message must not stop the others
                # Left unacked: it goes back to the dead letters when the channel closes.
                print(f"clinic: dead letter {_shown(properties.message_id)} skipped: it cannot be sent back as it is "
                      f"({type(exc).__name__})", file=sys.stderr)
                continue
            # Confirmed (and routed: mandatory) before the dead letter is taken off its queue.
            channel.basic_publish(requeue, routing_key, body, sent, mandatory=True)
            channel.basic_ack(method.delivery_tag)
            moved += 1
    finally:
        if connection.is_open:
            connection.close()
    return moved


def replay_unrouted(settings: Settings, limit: int | None = None) -> int:
    """Publish unrouted events to the exchange again, for the queues bound since (a consumer that
    started after its first events were published), each with its routing key and its publisher (the
    user_id the broker checked when it was first published: replaying needs the operations account).
    Only those there when it starts; one still unrouted comes back to the queue and is not moved again
    in a loop. One without a user_id is left where it is, with a line on stderr."""
    publisher = bus.Publisher(settings)
    channel = publisher.connection.channel()
    waiting = channel.queue_declare(settings.unrouted_queue, passive=True).method.message_count
    limit = waiting if limit is None else min(limit, waiting)
    moved = taken = 0
    try:
        while moved < limit and taken < waiting:
            method, properties, body = channel.basic_get(settings.unrouted_queue, auto_ack=False)
            if method is None:
                break
            taken += 1
            if not properties.user_id:
                print(f"clinic: unrouted event {_shown(properties.message_id)} skipped: it does not say who published it, "
                      "and its consumers would refuse it", file=sys.stderr)
                continue
            # The alternate exchange kept the key it was published with.
            publisher.publish(method.routing_key, properties.message_id, body, message_type=properties.type,
                              user_id=properties.user_id)
            channel.basic_ack(method.delivery_tag)
            moved += 1
    finally:
        publisher.close()
    return moved


if __name__ == "__main__":
    sys.exit(main())
