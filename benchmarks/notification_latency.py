"""How long a patient and the on-call staff wait for their email, through the real services and workers.

  confirmation  from a booking's HTTP answer (scheduling, POST /appointments) to the confirmation
                email received by an SMTP server on this machine: scheduling's outbox and relay,
                RabbitMQ, notifications' consumer and mail log, its sender, SMTP
  staff alert   from a monitor's HTTP answer (sessions, POST /vitals with a reading that raises an
                alert) to the on-call email received: the same path from sessions
  ceiling       one email handed straight to the same SMTP server with smtplib, in the same run: what
                the last hop alone costs

Every process runs as deployed (gunicorn for the web, the `<service>-worker` entry points), each
service on its own PostgreSQL database and its own broker account (its relay publishes its events
with its user_id, its consumer checks each event's publisher), events over a real RabbitMQ, all started here (or from
CLINIC_BENCH_POSTGRES_URL / CLINIC_BENCH_RABBITMQ_URL). Requests are offered at a fixed rate
(--rate per second), one event each; the first few of each kind (--warmup) warm the processes up and
are not counted. Target: p99 <= 1 s for both on this machine.

    .venv/bin/python benchmarks/notification_latency.py [--events 200] [--rate 10]
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import os
import re
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import requests  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402

from benchmarks.booking import NY, TIMEZONE, body_for, print_table, seed_scheduling, start_gunicorn  # noqa: E402
from benchmarks.servers import fresh_database, scratch_directory, start_postgres, start_rabbitmq  # noqa: E402
from benchmarks.vitals import STEADY, seed_sessions  # noqa: E402
from clinic import bus  # noqa: E402
from clinic.auth import issue_token  # noqa: E402
from clinic.config import load_settings  # noqa: E402
from clinic.db import create_engine  # noqa: E402
from clinic.localservers import free_port, stop_process_group  # noqa: E402
from clinic.migrations import migrate  # noqa: E402

BIN = Path(sys.executable).parent
TARGET_P99_SECONDS = 1.0
ONCALL = "oncall@clinic.example"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# A reading that scores 3 on the pulse and 3 on the pressure: urgent, a new episode in a calm session.
FAILING = {**STEADY, "heart_rate": 135, "systolic": 88}


class Sink:
    """An SMTP server on loopback that notes when each message arrived, to whom, and its text."""

    def __init__(self):
        self.received: list[tuple[float, list[str], str]] = []
        self.lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        arrived = time.time()
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        texts = [part.get_content() for part in message.walk() if part.get_content_type() == "text/plain"]
        with self.lock:
            self.received.append((arrived, list(envelope.rcpt_tos), "\n".join(texts)))
        return "250 OK"

    def arrivals(self) -> list[tuple[float, list[str], str]]:
        with self.lock:
            return list(self.received)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def seed_contacts(url: str, patients: list[str]) -> dict[str, str]:
    """A contact copy for each patient in notifications' database, as records' events leave it."""
    import notifications.db

    migrate(create_engine(url), notifications.db.MIGRATIONS)
    now = datetime.now(timezone.utc)
    addresses = {patient: f"patient-{number}@example.org" for number, patient in enumerate(patients)}
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        with cursor.copy("COPY contacts (patient_id, given_name, family_name, email, phone, preferred_contact, email_opt_out, "
                         "changed_at, version) FROM STDIN") as copy:
            for patient, address in addresses.items():
                copy.write_row((patient, "Ana", "Reyes", address, None, "email", False, now, 1))
    return addresses


def offered(rate: float, count: int, send) -> dict:
    """Call send(index) `count` times at `rate` per second, from a few threads; {key: (index, answered at)}."""
    answered: dict = {}
    lock = threading.Lock()
    start_at = time.perf_counter() + 0.2
    indices = iter(range(count))

    def run():
        while True:
            with lock:
                index = next(indices, None)
            if index is None:
                return
            pause = start_at + index / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            key = send(index)
            if key is not None:
                with lock:
                    answered[key] = (index, time.time())

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answered


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def spawn(stack: ExitStack, name: str, command: list[str], env: dict, logs: Path) -> subprocess.Popen:
    log = open(logs / f"{name}.log", "wb")
    process = subprocess.Popen(command, env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(log.close)
    stack.callback(stop_process_group, process)
    return process


def measure(args, stack: ExitStack) -> None:
    directory = scratch_directory(stack, "clinic-bench-mail-")
    logs = Path(tempfile.mkdtemp(prefix="clinic-bench-mail-logs-"))
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    broker = start_rabbitmq(stack, directory, namespace)
    server_url, pg_source = start_postgres(stack, directory)
    print(f"servers: {broker.source}; {pg_source}; {os.cpu_count()} cores")
    urls = {name: fresh_database(stack, server_url, f"bench_{name}") for name in ("scheduling", "sessions", "notifications")}
    first_day = datetime.now(NY).date() + timedelta(days=3)       # past tomorrow: no reminder is due meanwhile
    plan = seed_scheduling(urls["scheduling"], args.rooms, 1, args.events, first_day, 380, 0)
    addresses = seed_contacts(urls["notifications"], plan.patients)
    started_at = datetime.now(timezone.utc) - timedelta(minutes=30)
    monitors = seed_sessions(urls["sessions"], args.events, started_at)
    sink = Sink()
    sink.controller.start()
    stack.callback(sink.controller.stop)
    # The development key pair the services read and the staff token is signed with: the project's.
    env = {"CLINIC_BUS_NAMESPACE": namespace, "CLINIC_TIMEZONE": TIMEZONE, "CLINIC_ENV": "development",
           "CLINIC_VAR_DIR": str(ROOT / "var"),
           "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(sink.controller.port), "SMTP_SECURITY": "none", "ONCALL_EMAILS": ONCALL,
           # The monitors here post only when the run asks them to: no silent-monitor alert meanwhile.
           "SESSIONS_MONITOR_SILENT_MINUTES": "240"}
    # Each service's processes on its own broker account and database.
    service_env = {service: {**env, "RABBITMQ_URL": broker.url_for(service), "DATABASE_URL": url} for service, url in urls.items()}
    settings = load_settings("notifications", service_env["notifications"])
    from notifications.worker import handlers

    bus.declare_consumer(settings, handlers(settings))   # as `make run` does, before any relay runs
    for service in ("scheduling", "sessions", "notifications"):
        spawn(stack, f"{service}-worker", [str(BIN / f"{service}-worker")], service_env[service], logs)
    gunicorn = argparse.Namespace(workers=2, threads=4)
    scheduling_port, _ = start_gunicorn(stack, "scheduling.app:create_app()", service_env["scheduling"], gunicorn,
                                        logs / "scheduling-web.log")
    sessions_port, _ = start_gunicorn(stack, "sessions.app:create_app()", service_env["sessions"], gunicorn,
                                      logs / "sessions-web.log")

    # The ceiling: one email straight to the sink, as many times as there are events.
    direct = []
    for number in range(args.events):
        sent = time.time()
        with smtplib.SMTP("127.0.0.1", sink.controller.port) as client:
            client.sendmail(ONCALL, [f"direct-{number}@example.org"], f"Subject: direct {number}\r\n\r\nhello\r\n")
        direct.append(time.time() - sent)

    # A front desk token for scheduling (its audience); the rate limits stay as deployed: 10 bookings a second
    # from one member of staff for 20 s is within them.
    token = issue_token(load_settings("scheduling", service_env["scheduling"]), "bench", ["front_desk"])
    desk = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    slots = plan.ordinary_slots()
    bodies = [body_for(patient, *next(slots)) for patient in plan.patients]
    local = threading.local()

    def http() -> requests.Session:
        # One keep-alive connection per sending thread (a Session is not shared between threads).
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session

    def book(index: int):
        response = http().post(f"http://127.0.0.1:{scheduling_port}/appointments", data=bodies[index], headers=desk, timeout=30)
        return addresses[json.loads(bodies[index])["patient_id"]] if response.status_code == 201 else None

    booked = offered(args.rate, args.events, book)
    wait_for(lambda: len({r for _, rcpts, _ in sink.arrivals() for r in rcpts} & set(booked)) >= len(booked), 120,
             "every confirmation email")
    confirmed = {rcpt: arrived for arrived, rcpts, _ in sink.arrivals() for rcpt in rcpts if rcpt in booked}
    confirmation = [confirmed[address] - answered for address, (index, answered) in booked.items() if index >= args.warmup]

    def alert(index: int):
        token, session_id = monitors[index]
        reading = {**FAILING, "measured_at": datetime.now(timezone.utc).isoformat()}
        response = http().post(f"http://127.0.0.1:{sessions_port}/vitals", json={"readings": [reading]},
                                headers={"Authorization": f"Bearer {token}"}, timeout=30)
        return session_id if response.status_code == 201 else None

    raised = offered(args.rate, args.events, alert)

    def alerted() -> dict[str, float]:
        found = {}
        for arrived, rcpts, text in sink.arrivals():
            if ONCALL in rcpts:
                for session_id in UUID.findall(text):
                    if session_id in raised:
                        found.setdefault(session_id, arrived)
        return found

    wait_for(lambda: len(alerted()) >= len(raised), 120, "every staff alert email")
    emailed = alerted()
    staff = [emailed[session_id] - answered for session_id, (index, answered) in raised.items() if index >= args.warmup]
    report(args, direct, confirmation, staff, len(confirmation), len(staff))


def report(args, direct, confirmation, staff, booked, raised) -> None:
    def row(name, values, target):
        p99 = percentile(values, 0.99)
        verdict = "" if target is None else f"<= {target:g} s: {'met' if p99 <= target else 'NOT met'}"
        return (name, f"{len(values)}", f"{percentile(values, 0.5) * 1000:.0f} ms", f"{p99 * 1000:.0f} ms",
                f"{max(values) * 1000:.0f} ms", verdict)

    rows = [row("ceiling: one email straight to SMTP", direct, None),
            row("booking answered -> confirmation email received", confirmation, TARGET_P99_SECONDS),
            row("alerting reading answered -> staff email received", staff, TARGET_P99_SECONDS)]
    print_table(("", "events", "p50", "p99", "max", "target (p99)"), rows)
    print(f"\n{booked} bookings and {raised} alerting readings counted (after {args.warmup} of each), offered at {args.rate:g}/s; "
          f"mean {statistics.fmean(confirmation) * 1000:.0f} ms and {statistics.fmean(staff) * 1000:.0f} ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200, help="bookings, and alerting readings (default 200)")
    parser.add_argument("--rate", type=float, default=10, help="offered per second (default 10)")
    parser.add_argument("--rooms", type=int, default=20, help="infusion rooms booked across (default 20)")
    parser.add_argument("--warmup", type=int, default=10, help="first events of each kind not counted (default 10)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with ExitStack() as stack:
        measure(args, stack)
    print(f"\ntotal run time {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
