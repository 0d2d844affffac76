"""Booking throughput and latency of the scheduling service, beside the web stack's own ceiling.

Both servers run under the same gunicorn command line on the same PostgreSQL:
  baseline   benchmarks/booking_baseline.py: a plain Flask endpoint that inserts one row
  booking    the scheduling service, POST /appointments (infusions, explicit rooms)

  peak       closed loop: N clients send requests back to back for a while. Bookings go across many
             rooms and days; every fifth request instead targets the "hot" slot of the moment (the
             hot slot changes every half second), so those collide with each other and get 409s.
             The servers take turns in rounds (baseline, booking, baseline, ...) so that the drift
             of a shared machine's speed falls on both; the ratio is the median round's.
  latency    open loop: requests offered at a fixed rate (100/s) for 30 s whatever the answers;
             a latency runs from the moment a request was due, so a slow server cannot hide its queue.

The scheduling database starts with 60 days of completed infusions (--history-days), as a clinic's
database would; an empty, freshly analysed table makes the planner choose plans that do not last.

During the peak rounds the CPU each side uses is read from /proc (gunicorn's processes, PostgreSQL's
when it runs here, the load generator's) and printed per request: with every core busy, the ratio of
those totals is what the peak ratio can be at best.

Afterwards the database is checked: no room and no patient held twice at once, and exactly one
appointment per 201 answer. Targets: bookings made >= 35 % of the baseline's requests/s in the same
run (median round); p99 <= 50 ms at 100 bookings/s; zero double bookings. A booking costs about 2.2 x
the CPU of the bare one-row insert (two exclusion constraints, the outbox row, the audit row, the
token and schema checks), which bounds bookings made at about 36-38 % of the baseline's requests/s
on 2 cores: the safety layers stay, and the target says so.

The load generator runs on the same machine as gunicorn and PostgreSQL and competes with them for
the cores; the figures are what this one machine does with all three.

PostgreSQL: CLINIC_BENCH_POSTGRES_URL when set, else one started from the local packages in a
temporary directory (stopped at the end). Each run uses fresh databases, dropped at the end.

    .venv/bin/python benchmarks/booking.py [--rounds 5] [--round-seconds 4] [--latency-seconds 30] [--clients 8] ...
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
try:
    import clinic  # noqa: F401 - installed in the project's virtualenv
except ImportError:  # run with another interpreter: use the library from the source tree
    sys.path.insert(0, str(ROOT / "shared"))
    sys.path.insert(0, str(ROOT / "services" / "scheduling"))
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from benchmarks.servers import describe_postgres, fresh_database, scratch_directory, start_postgres  # noqa: E402
from clinic.auth import issue_token  # noqa: E402
from clinic.config import load_settings  # noqa: E402
from clinic.db import create_engine  # noqa: E402
from clinic.limits import LOAD_TEST_LIMITS_ENV  # noqa: E402
from clinic.localservers import free_port, stop_process_group, wait_for_port  # noqa: E402
from clinic.migrations import migrate  # noqa: E402

TIMEZONE = "America/New_York"
NY = ZoneInfo(TIMEZONE)
INFUSION_MINUTES = 120
# Starts that leave each 2 h infusion its 15 min turnover before the next, inside 07:00-21:00.
DAY_STARTS = ("07:00", "09:15", "11:30", "13:45", "16:00", "18:15")
HOT_EVERY = 5            # every fifth request goes for the hot slot
HOT_SLOT_SECONDS = 0.5   # how long one slot stays hot
JUDGED_SHARE = 0.35      # the target: bookings made/s over the baseline's requests/s, median round
BIN = Path(sys.executable).parent


@dataclass
class Results:
    """Answers of one load phase: (status, latency in ms) per request, plus the phase's duration."""

    answers: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    cpu: Cpu | None = None   # what the phase cost, where it could be measured

    def count(self, status: int | None = None) -> int:
        return sum(1 for answer_status, _ in self.answers if status is None or answer_status == status)

    def per_second(self, status: int | None = None) -> float:
        return self.count(status) / self.seconds if self.seconds else 0.0

    def percentile(self, share: float) -> float:
        latencies = sorted(latency for _, latency in self.answers)
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(share * len(latencies)))]

    def statuses(self) -> str:
        counted: dict[int, int] = {}
        for status, _ in self.answers:
            counted[status] = counted.get(status, 0) + 1
        return ", ".join(f"{status if status else 'error'}: {n}" for status, n in sorted(counted.items()))


# --- where the CPU goes ---------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Cpu:
    """CPU seconds (user + system) used by each side: the web server's processes, the database
    server's (None when it runs elsewhere) and the load generator's."""

    web: float
    database: float | None
    generator: float

    def __sub__(self, other: Cpu) -> Cpu:
        database = None if self.database is None or other.database is None else self.database - other.database
        return Cpu(self.web - other.web, database, self.generator - other.generator)

    def __add__(self, other: Cpu) -> Cpu:
        database = None if self.database is None or other.database is None else self.database + other.database
        return Cpu(self.web + other.web, database, self.generator + other.generator)


def cpu_of_tree(root: int) -> float | None:
    """CPU seconds used so far by a process and its descendants: those running, and those ended and
    waited for (a parent keeps its reaped children's time: PostgreSQL's backends come and go). None
    without Linux's /proc."""
    if not os.path.isdir("/proc"):
        return None
    children: dict[int, list[int]] = {}
    used: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()  # the name may hold spaces and parentheses
        except OSError:
            continue  # ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(entry))
        used[int(entry)] = sum(int(ticks) for ticks in fields[11:15]) / TICKS  # utime, stime, cutime, cstime
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += used.get(pid, 0.0)
        todo.extend(children.get(pid, ()))
    return total


@dataclass
class CpuMeter:
    """Reads what each side has used so far. The web server is a gunicorn master and its workers;
    the database server a postmaster and its backends, when it runs on this machine. The load
    generator's processes are this process's children, counted once they have been waited for."""

    web: int
    database: int | None

    def read(self) -> Cpu | None:
        web = cpu_of_tree(self.web)
        if web is None:
            return None
        times = os.times()
        return Cpu(web, cpu_of_tree(self.database) if self.database else None, times.children_user + times.children_system)


def local_postmaster(server_url: str) -> int | None:
    """The pid of the PostgreSQL server behind the URL when it runs on this machine, else None.

    The server names its backend's pid; on another machine, or in a container, the same number here
    is some other process, so both it and its parent must be PostgreSQL's."""
    with psycopg.connect(server_url) as connection:
        backend = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
        try:
            with open(f"/proc/{backend}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{backend}/comm") as name, open(f"/proc/{parent}/comm") as parent_name:
                ours = name.read().startswith("postgres") and parent_name.read().startswith("postgres")
        except OSError:
            return None
        return parent if ours else None


# --- the work: what each request sends ------------------------------------------------------


@dataclass
class Plan:
    """What the clients send: a body for each request, none booking the same room, time or patient twice
    except the hot slots, which are meant to collide."""

    rooms: list[str]
    hot_rooms: list[str]
    patients: list[str]
    first_day: date
    days: int
    history: int = 0   # past appointments seeded before the run

    def ordinary_slots(self):
        """(room, local start) pairs that never overlap, spread across rooms first, then times, then days."""
        for offset in range(self.days):
            day = self.first_day + timedelta(days=offset)
            for start in DAY_STARTS:
                for room in self.rooms:
                    yield room, datetime.combine(day, datetime.strptime(start, "%H:%M").time(), tzinfo=NY)

    def hot_slot(self, index: int) -> tuple[str, datetime]:
        room = self.hot_rooms[index % len(self.hot_rooms)]
        slot = index // len(self.hot_rooms)
        day = self.first_day + timedelta(days=slot // len(DAY_STARTS))
        return room, datetime.combine(day, datetime.strptime(DAY_STARTS[slot % len(DAY_STARTS)], "%H:%M").time(), tzinfo=NY)


def body_for(patient: str, room: str, starts_at: datetime) -> bytes:
    return json.dumps({"patient_id": patient, "kind": "infusion", "starts_at": starts_at.isoformat(), "room_id": room}).encode()


# --- the load generator ---------------------------------------------------------------------


class Client:
    """One keep-alive HTTP connection, reopened when the server closes it."""

    def __init__(self, port: int, path: str, headers: dict):
        self.port, self.path, self.headers = port, path, headers
        self.connection: http.client.HTTPConnection | None = None

    def post(self, body) -> int:
        """Send a body (bytes), or a (headers, body) pair whose headers go on top of the client's."""
        headers = self.headers
        if isinstance(body, tuple):
            headers, body = {**self.headers, **body[0]}, body[1]
        for attempt in range(2):
            try:
                if self.connection is None:
                    self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self.connection.request("POST", self.path, body, headers)
                response = self.connection.getresponse()
                response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                return response.status
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    return 0
        return 0

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _closed_loop_process(port, path, headers, jobs, seconds, start_at, threads, out):
    """One generator process: `threads` clients sending their own bodies back to back until the time is up."""
    per_thread = [jobs[index::threads] for index in range(threads)]
    answers: list[list[tuple[int, float]]] = [[] for _ in range(threads)]

    def run(index: int) -> None:
        client = Client(port, path, headers)
        bodies = iter(per_thread[index])
        while time.time() < start_at:
            time.sleep(0.001)
        deadline = start_at + seconds
        while True:
            now = time.time()
            if now >= deadline:
                break
            body = next(bodies, None)
            if body is None:
                break
            if callable(body):
                body = body(now - start_at)
            sent = time.perf_counter()
            status = client.post(body)
            answers[index].append((status, (time.perf_counter() - sent) * 1000))
        client.close()

    pool = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    out.put([answer for per_client in answers for answer in per_client])


def closed_loop(port: int, path: str, headers: dict, jobs: list, seconds: float, clients: int, processes: int,
                meter: CpuMeter | None = None) -> Results:
    """`clients` clients over `processes` processes, each client sending its next job as soon as the last is answered."""
    before = meter.read() if meter else None
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    start_at = time.time() + 0.5
    per_process = [jobs[index::processes] for index in range(processes)]
    workers = [context.Process(target=_closed_loop_process,
                               args=(port, path, headers, per_process[index], seconds, start_at, clients // processes, out))
               for index in range(processes)]
    for worker in workers:
        worker.start()
    answers = [answer for _ in workers for answer in out.get(timeout=seconds + 120)]
    for worker in workers:
        worker.join(timeout=30)
    after = meter.read() if before is not None else None
    return Results(answers, seconds, after - before if after is not None else None)


def open_loop(port: int, path: str, headers: dict, jobs: list, rate: float, seconds: float, threads: int = 32) -> Results:
    """Requests offered at `rate`/s for `seconds`, whatever the answers; latency from when each was due."""
    total = int(rate * seconds)
    if len(jobs) < total:
        raise SystemExit(f"not enough prepared requests for the open loop ({len(jobs)} < {total})")
    answers: list[tuple[int, float] | None] = [None] * total
    next_index = iter(range(total))
    lock = threading.Lock()
    start_at = time.perf_counter() + 0.5

    def run() -> None:
        client = Client(port, path, headers)
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            due = start_at + index / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            body = jobs[index]
            if callable(body):
                body = body(due - start_at)
            status = client.post(body)
            answers[index] = (status, (time.perf_counter() - due) * 1000)
        client.close()

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return Results([answer for answer in answers if answer is not None], seconds)


# --- servers and data -----------------------------------------------------------------------


def seed_scheduling(url: str, rooms: int, hot_rooms: int, patients: int, first_day: date, days: int, history_days: int) -> Plan:
    """Rooms, office hours every day 07:00-21:00 New York time, a 120-minute plan for each patient, and
    `history_days` of completed infusions before today in every room (a clinic's database is not new)."""
    import scheduling.db

    migrate(create_engine(url), scheduling.db.MIGRATIONS)
    now = datetime.now(timezone.utc)
    room_ids = [str(uuid.uuid4()) for _ in range(rooms + hot_rooms)]
    patient_ids = [str(uuid.uuid4()) for _ in range(patients)]
    # One past patient per room: each is in one room at a time, and the day's starts never overlap.
    past_patients = [str(uuid.uuid4()) for _ in room_ids]
    today = datetime.now(NY).date()
    history = 0
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        with cursor.copy("COPY rooms (id, name, kind, active, created_at, updated_at) FROM STDIN") as copy:
            for number, room_id in enumerate(room_ids):
                copy.write_row((room_id, f"Infusion {number:03d}", "infusion", True, now, now))
        cursor.executemany("INSERT INTO office_hours (weekday, opens, closes) VALUES (%s, '07:00', '21:00')", [(d,) for d in range(7)])
        with cursor.copy("COPY plan_copies (patient_id, plan_id, infusion_minutes, changed_at) FROM STDIN") as copy:
            for patient_id in patient_ids:
                copy.write_row((patient_id, str(uuid.uuid4()), INFUSION_MINUTES, now))
        with cursor.copy("COPY appointments (id, patient_id, kind, status, room_id, plan_id, starts_at, ends_at, room_blocked_until, "
                         "patient_busy_until, booked_at, updated_at, ended_at, session_outcome) FROM STDIN") as copy:
            for back in range(history_days, 0, -1):
                day = today - timedelta(days=back)
                for start in DAY_STARTS:
                    starts_at = datetime.combine(day, datetime.strptime(start, "%H:%M").time(), tzinfo=NY).astimezone(timezone.utc)
                    ends_at = starts_at + timedelta(minutes=INFUSION_MINUTES)
                    for room_id, patient_id in zip(room_ids, past_patients, strict=True):
                        copy.write_row((str(uuid.uuid4()), patient_id, "infusion", "completed", room_id, str(uuid.uuid4()), starts_at,
                                        ends_at, ends_at + timedelta(minutes=15), ends_at, starts_at - timedelta(days=14), ends_at, ends_at,
                                        "completed"))
                        history += 1
    return Plan(room_ids[:rooms], room_ids[rooms:], patient_ids, first_day, days, history)


def seed_baseline(url: str) -> None:
    from benchmarks.booking_baseline import metadata

    engine = create_engine(url)
    metadata.create_all(engine)
    engine.dispose()


def settle(url: str, seeded: tuple[str, ...]) -> None:
    """Vacuum and analyse the tables just seeded, and checkpoint, so that autovacuum does not wake up
    to do it during a measurement (and take CPU from whichever server is measured then).

    The tables the run fills (appointments, outbox, the baseline's rows) are left as migrations leave
    them in a new deployment. Analysed while empty, they would tell the planner "no rows", and the
    services' prepared statements would keep a plan for an empty table (a sequential scan) while the
    run fills it, until autovacuum analyses it again.
    """
    with psycopg.connect(url, autocommit=True) as connection:
        for table in seeded:
            connection.execute(f"VACUUM ANALYZE {table}")
        try:
            connection.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            pass  # a server given by URL, as a user without the right: its own checkpoints will do


def start_gunicorn(stack: ExitStack, app: str, env: dict, args, log: Path) -> tuple[int, int]:
    """(port, pid of the gunicorn master)."""
    port = free_port()
    # The clinic's one gunicorn configuration (a gthread worker), as deployed; the run's own sizes on top.
    command = [str(BIN / "gunicorn"), "-c", "python:clinic.gunicorn_conf", "--bind", f"127.0.0.1:{port}",
               "--workers", str(args.workers), "--threads", str(args.threads), "--keep-alive", "30", "--backlog", "2048", app]
    output = open(log, "wb")
    process = subprocess.Popen(command, env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, stdout=output,
                               stderr=subprocess.STDOUT, start_new_session=True)

    def stop():
        stop_process_group(process)
        output.close()

    stack.callback(stop)
    wait_for_port(port, 30, process, f"gunicorn {app} (log: {log})")
    return port, process.pid


def double_bookings(url: str) -> tuple[int, int]:
    """(rooms held twice at once, patients held twice at once) among the appointments that hold anything."""
    holding = "status IN ('booked', 'checked_in', 'completed')"
    with psycopg.connect(url) as connection:
        rooms = connection.execute(
            f"SELECT count(*) FROM appointments a JOIN appointments b ON a.room_id = b.room_id AND a.id < b.id "
            f"WHERE a.{holding} AND b.{holding} AND a.starts_at < b.room_blocked_until AND b.starts_at < a.room_blocked_until"
        ).fetchone()[0]
        patients = connection.execute(
            f"SELECT count(*) FROM appointments a JOIN appointments b ON a.patient_id = b.patient_id AND a.id < b.id "
            f"WHERE a.{holding} AND b.{holding} AND a.starts_at < b.patient_busy_until AND b.starts_at < a.patient_busy_until"
        ).fetchone()[0]
    return rooms, patients


def count_rows(url: str, table: str) -> int:
    with psycopg.connect(url) as connection:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# --- the run --------------------------------------------------------------------------------


class Jobs:
    """Hands out request bodies: unique bookings, and hot-slot bookings that pick the slot of the moment."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.slots = plan.ordinary_slots()
        self.patients = iter(plan.patients)
        self.hot_phase = 0

    def take(self, count: int, hot_every: int = HOT_EVERY, phase_offset: float = 0.0) -> list:
        """`count` bodies; every `hot_every`-th is a callable of the elapsed time, for the hot slot then."""
        jobs = []
        base = self.hot_phase
        for index in range(count):
            patient = next(self.patients)
            if hot_every and index % hot_every == hot_every - 1:
                jobs.append(_HotBooking(self.plan, patient, base))
            else:
                room, starts_at = next(self.slots)
                jobs.append(body_for(patient, room, starts_at))
        # Later phases use hot slots of their own, never ones earlier phases already filled
        # (a phase moves to a new hot slot every half second: 400 last well over a minute).
        self.hot_phase += 400
        return jobs


class _HotBooking:
    """A booking for whichever hot slot is hot when it is sent (picklable, for the generator processes)."""

    def __init__(self, plan: Plan, patient: str, base: int):
        self.plan, self.patient, self.base = plan, patient, base

    def __call__(self, elapsed: float) -> bytes:
        room, starts_at = self.plan.hot_slot(self.base + int(elapsed / HOT_SLOT_SECONDS))
        return body_for(self.patient, room, starts_at)


def baseline_jobs(count: int) -> list[bytes]:
    starts_at = datetime(2030, 1, 7, 14, 0, tzinfo=timezone.utc).isoformat()
    return [json.dumps({"patient_id": str(uuid.uuid4()), "kind": "infusion", "starts_at": starts_at}).encode() for _ in range(count)]


def measure(args, stack: ExitStack) -> None:
    server_url, source = start_postgres(stack, scratch_directory(stack, "clinic-bench-booking-"))
    work = Path(tempfile.mkdtemp(prefix="clinic-bench-logs-"))
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    scheduling_url = fresh_database(stack, server_url, "bench_scheduling")
    baseline_url = fresh_database(stack, server_url, "bench_baseline")
    print(f"servers: {source}")
    print(f"{describe_postgres(scheduling_url)}; {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"gunicorn: {args.workers} workers x {args.threads} threads (gthread), keep-alive; "
          f"load: {args.clients} closed-loop clients in {args.processes} processes; open loop {args.rate:g}/s")
    print("note: the load generator runs on this machine too and takes CPU from gunicorn and PostgreSQL")
    sys.stdout.flush()

    # Bodies enough for 3,000 requests/s (more than either server answers here) in every phase.
    per_round = int(args.round_seconds * 3000) + 2000
    warmup_requests = int(args.warmup_seconds * 3000) + 2000
    needed = args.rounds * per_round + warmup_requests + int(args.rate * args.latency_seconds) + 1000
    first_day = datetime.now(NY).date() + timedelta(days=2)
    days = min(380, needed // (len(DAY_STARTS) * args.rooms) + 2)
    plan = seed_scheduling(scheduling_url, args.rooms, args.hot_rooms, needed, first_day, days, args.history_days)
    print(f"seeded: {len(plan.rooms) + len(plan.hot_rooms)} infusion rooms, {len(plan.patients):,} patients with an active plan, "
          f"{plan.history:,} completed infusions over the {args.history_days} days before today")
    sys.stdout.flush()
    seed_baseline(baseline_url)
    settle(scheduling_url, ("rooms", "office_hours", "plan_copies", "appointments"))
    settle(baseline_url, ())
    settings = load_settings("scheduling", env={})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {issue_token(settings, 'bench', ['front_desk'])}"}
    baseline_headers = {"Content-Type": "application/json"}
    # The web writes events to the outbox only and never connects to the broker (no relay runs here): no
    # broker, so no broker account can matter to what is measured.
    env = {"CLINIC_TIMEZONE": TIMEZONE, "CLINIC_ENV": "development", "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/%2F"}
    # The service's own ceiling is measured, not the rate limits (one caller, one address, far past them).
    env.update(LOAD_TEST_LIMITS_ENV)
    jobs = Jobs(plan)
    path = "/appointments"

    with ExitStack() as servers:
        base_port, base_pid = start_gunicorn(servers, "benchmarks.booking_baseline:create_app()",
                                             {**env, "DATABASE_URL": baseline_url}, args, work / "baseline.log")
        port, pid = start_gunicorn(servers, "scheduling.app:create_app()", {**env, "DATABASE_URL": scheduling_url}, args,
                                   work / "scheduling.log")
        postmaster = local_postmaster(server_url)
        base_meter, meter = CpuMeter(base_pid, postmaster), CpuMeter(pid, postmaster)
        # A short warm-up of each, not counted.
        closed_loop(base_port, "/rows", baseline_headers, baseline_jobs(warmup_requests), args.warmup_seconds, args.clients, args.processes)
        warmup = closed_loop(port, path, headers, jobs.take(warmup_requests), args.warmup_seconds, args.clients, args.processes)
        # Peak: the two servers take turns, round after round, so that a slow spell of the machine
        # (a virtual machine's speed drifts by tens of percent) falls on both rather than on one.
        rounds = []
        for number in range(1, args.rounds + 1):
            base_round = closed_loop(base_port, "/rows", baseline_headers, baseline_jobs(per_round), args.round_seconds, args.clients,
                                     args.processes, base_meter)
            booking_round = closed_loop(port, path, headers, jobs.take(per_round), args.round_seconds, args.clients, args.processes,
                                        meter)
            rounds.append((base_round, booking_round))
            print(f"round {number}: baseline {base_round.per_second():,.0f} requests/s; booking {booking_round.per_second():,.0f} "
                  f"requests/s, {booking_round.per_second(201):,.0f} bookings/s "
                  f"({booking_round.per_second(201) / max(base_round.per_second(), 1e-9):.0%} of the baseline)")
            sys.stdout.flush()
        base_latency = open_loop(base_port, "/rows", baseline_headers, baseline_jobs(int(args.rate * args.latency_seconds)), args.rate,
                                 args.latency_seconds)
        latency = open_loop(port, path, headers, jobs.take(int(args.rate * args.latency_seconds)), args.rate, args.latency_seconds)
        failures = [line for line in (work / "scheduling.log").read_text(errors="replace").splitlines() if "ERROR" in line][:5]

    base_peak = Results([answer for base_round, _ in rounds for answer in base_round.answers], args.rounds * args.round_seconds,
                        sum_cpu(base_round.cpu for base_round, _ in rounds))
    peak = Results([answer for _, booking_round in rounds for answer in booking_round.answers], args.rounds * args.round_seconds,
                   sum_cpu(booking_round.cpu for _, booking_round in rounds))
    created = sum(result.count(201) for result in (warmup, peak, latency))
    stored = count_rows(scheduling_url, "appointments") - plan.history
    rooms_twice, patients_twice = double_bookings(scheduling_url)
    report(args, rounds, base_peak, base_latency, peak, latency, created, stored, rooms_twice, patients_twice, failures)


def sum_cpu(phases) -> Cpu | None:
    total = None
    for cpu in phases:
        if cpu is None:
            return None
        total = cpu if total is None else total + cpu
    return total


def cpu_rows(base_peak: Results, peak: Results) -> list[tuple]:
    """What a request costs each side in the peak rounds, in CPU milliseconds per request answered.
    With every core busy, requests/s is about cores / CPU per request: the ratio of the totals is
    what the peak ratio can be at best."""
    if base_peak.cpu is None or peak.cpu is None:
        return []

    def per_request(seconds: float | None, results: Results) -> float | None:
        answered = results.count() - results.count(0)
        return None if seconds is None or not answered else seconds / answered * 1000

    rows = []
    sides = [("web server (gunicorn)", "web"), ("PostgreSQL", "database"), ("load generator", "generator")]
    totals = []
    for results in (base_peak, peak):
        parts = [per_request(getattr(results.cpu, side), results) for _, side in sides]
        totals.append(None if None in parts else sum(parts))
    for label, side in sides:
        base, booking = per_request(getattr(base_peak.cpu, side), base_peak), per_request(getattr(peak.cpu, side), peak)
        if base is None or booking is None:
            rows.append((f"CPU per request: {label}", "not measured", "not measured", "runs on another machine", ""))
            continue
        rows.append((f"CPU per request: {label}", f"{base:.2f} ms", f"{booking:.2f} ms",
                     f"{booking / base:.1f} x baseline" if base else "", ""))
    if None not in totals and totals[0]:
        rows.append(("CPU per request: all three", f"{totals[0]:.2f} ms", f"{totals[1]:.2f} ms",
                     f"{totals[1] / totals[0]:.2f} x baseline", ""))
    return rows


def print_table(header: tuple, rows: list[tuple]) -> None:
    """The figures as a plain table, each column as wide as its widest cell (every benchmark prints one)."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, tuple("-" * width for width in widths), *rows]:
        print("  ".join(f"{str(cell):<{widths[i]}}" for i, cell in enumerate(row)).rstrip())


def report(args, rounds, base_peak, base_latency, peak, latency, created, stored, rooms_twice, patients_twice, failures) -> None:
    # The target is judged on the median round: each round's bookings/s over the baseline's requests/s
    # in the round beside it.
    share = statistics.median(booking.per_second(201) / base.per_second() for base, booking in rounds if base.per_second())
    request_share = statistics.median(booking.per_second() / base.per_second() for base, booking in rounds if base.per_second())
    p99 = latency.percentile(0.99)
    clean = rooms_twice == 0 and patients_twice == 0 and created == stored

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    rows = [
        ("peak, requests/s (closed loop)", f"{base_peak.per_second():,.0f}", f"{peak.per_second():,.0f}",
         f"{request_share:.0%} of baseline (median round)", ""),
        ("peak, bookings made/s (201)", "", f"{peak.per_second(201):,.0f}", f"{share:.1%} of baseline (median round)",
         f">= {JUDGED_SHARE:.0%}: {met(share >= JUDGED_SHARE)}"),
        (f"latency p50 at {args.rate:g}/s (open loop)", f"{base_latency.percentile(0.50):.1f} ms",
         f"{latency.percentile(0.50):.1f} ms", "", ""),
        (f"latency p99 at {args.rate:g}/s (open loop)", f"{base_latency.percentile(0.99):.1f} ms", f"{p99:.1f} ms", "",
         f"<= 50 ms: {met(p99 <= 50)}"),
        (f"latency max at {args.rate:g}/s", f"{base_latency.percentile(1.0):.1f} ms", f"{latency.percentile(1.0):.1f} ms", "", ""),
        ("double bookings in the database", "", f"rooms {rooms_twice}, patients {patients_twice}",
         f"{stored} appointments for {created} x 201", f"zero: {met(clean)}"),
        *cpu_rows(base_peak, peak),
    ]
    print_table(("", "baseline (1-row insert)", "booking", "ratio / check", "target"), rows)
    print()
    print(f"peak answers:    baseline {base_peak.statuses()}; booking {peak.statuses()} "
          f"(1 in {HOT_EVERY} aimed at a hot slot, so 409s are expected)")
    print(f"latency answers: baseline {base_latency.statuses()}; booking {latency.statuses()}; "
          f"booking latency mean {statistics.fmean(lat for _, lat in latency.answers):.1f} ms")
    if failures:
        print("errors logged by the scheduling service (first lines):")
        for line in failures:
            print(f"  {line[:200]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="peak rounds, each server in turn (default 5)")
    parser.add_argument("--round-seconds", type=float, default=4, help="closed-loop measurement per server and round (default 4)")
    parser.add_argument("--warmup-seconds", type=float, default=2, help="uncounted closed loop of each server first (default 2)")
    parser.add_argument("--latency-seconds", type=float, default=30, help="open-loop duration per server (default 30)")
    parser.add_argument("--rate", type=float, default=100, help="open-loop offered requests/s (default 100)")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients (default 8)")
    parser.add_argument("--processes", type=int, default=2, help="generator processes for the closed loop (default 2)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers for both servers (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker for both servers (default 1)")
    parser.add_argument("--rooms", type=int, default=40, help="infusion rooms booked across (default 40)")
    parser.add_argument("--history-days", type=int, default=60,
                        help="days of completed infusions seeded before today in every room (default 60)")
    parser.add_argument("--hot-rooms", type=int, default=4, help="rooms whose slots are the colliding ones (default 4)")
    args = parser.parse_args(argv)
    counts = (args.rounds, args.clients, args.processes, args.workers, args.threads, args.rooms, args.hot_rooms)
    if min(counts) < 1 or args.clients % args.processes:
        parser.error("counts must be at least 1, and --clients a multiple of --processes")
    started = time.perf_counter()
    with ExitStack() as stack:  # stops what was started and drops what was made, whatever happens
        measure(args, stack)
    print(f"\ntotal run time {time.perf_counter() - started:.1f}s (including starting and stopping the servers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
