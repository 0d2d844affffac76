"""Vitals ingest of the sessions service (POST /vitals from bedside monitors), beside its ceilings.

Everything runs in one run, on one PostgreSQL, under the clinic's gunicorn command line:
  raw insert   the same reading rows written straight into a copy of sessions' readings table, 20 per
               statement batch, from as many connections as gunicorn has workers: what PostgreSQL
               itself takes on this machine (in every round, beside the batches)
  baseline     benchmarks/booking_baseline.py: a plain Flask endpoint that inserts one row
  sessions     the sessions service: monitors, each registered for its own infusion room with a
               started session, post full sets of vital signs with their device tokens

  batches      closed loop: every request a batch of 20 readings (each a full set of vital signs)
  singles      closed loop, one reading per request
               Rounds: raw insert, batches, baseline, singles, in turn, so that the drift of a shared
               machine's speed falls on a figure and its ceiling alike; each figure is the median round's.
  latency      open loop: one reading per request offered at 500 readings/s whatever the answers;
               a latency runs from the moment a request was due
  memory       the resident set of each gunicorn worker of the service after the run

Afterwards the database is checked: exactly one stored reading per reading answered as stored.
Targets: batches >= 5,000 readings/s and >= 20 % of the raw insert's readings/s; singles >= 50 % of
the baseline's requests/s (median round); p99 <= 50 ms at 500 readings/s; each worker < 150 MB.

The load generator runs on the same machine as gunicorn and PostgreSQL and competes with them for
the cores; the figures are what this one machine does with all three.

PostgreSQL: CLINIC_BENCH_POSTGRES_URL when set, else one started from the local packages in a
temporary directory (stopped at the end). Each run uses fresh databases, dropped at the end.

    .venv/bin/python benchmarks/vitals.py [--rounds 3] [--round-seconds 4] [--latency-seconds 20] ...
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from benchmarks.booking import (  # noqa: E402
    CpuMeter,
    Results,
    baseline_jobs,
    closed_loop,
    cpu_rows,
    local_postmaster,
    open_loop,
    print_table,
    seed_baseline,
    settle,
    start_gunicorn,
    sum_cpu,
)
from benchmarks.servers import describe_postgres, fresh_database, scratch_directory, start_postgres  # noqa: E402
from clinic.db import create_engine  # noqa: E402
from clinic.limits import LOAD_TEST_LIMITS_ENV  # noqa: E402
from clinic.migrations import migrate  # noqa: E402

TIMEZONE = "America/New_York"
BATCH = 20
BATCH_TARGET = 5000          # readings/s in batches of 20
RAW_SHARE = 0.20             # of the raw insert's readings/s
SINGLE_SHARE = 0.50          # single-reading requests/s over the baseline's requests/s
LATENCY_P99_MS = 50
MEMORY_MB = 150
SPACING = timedelta(milliseconds=5)   # between two readings of one monitor (unique per device and time)
# A full set of vital signs that scores 0 on NEWS2: the common case, and no alert episode to open.
STEADY = {"heart_rate": 72, "systolic": 124, "diastolic": 78, "respiratory_rate": 16, "spo2": 97, "on_oxygen": False,
          "temperature": "36.8", "consciousness": "alert"}


# --- the clinic's side: rooms, started sessions, one monitor per room -----------------------


def seed_sessions(url: str, rooms: int, started_at: datetime) -> list[tuple[str, str]]:
    """`rooms` infusion rooms, each with a started session and a registered monitor, made by sessions'
    own handlers and use cases from the events scheduling and records send. (device token, session id) per room."""
    import sessions.db
    from clinic import events
    from clinic.inbox import apply_once
    from clinic.unit_of_work import UnitOfWork
    from sessions.handlers import make_handlers
    from sessions.services.devices import register_device
    from sessions.services.sessions import start_session

    engine = create_engine(url)
    handlers = make_handlers()

    def at(moment: datetime):
        return lambda: moment

    def deliver(event_type: str, producer: str, data: dict) -> None:
        sent = events.Event(type=event_type, producer=producer, data=events.serialise_payload(event_type, data))
        apply_once(engine, sessions.db.metadata, "sessions", events.parse(sent.to_json()), handlers[event_type], clock=at(started_at))

    def unit_of_work(moment: datetime) -> UnitOfWork:
        return UnitOfWork(engine, sessions.db.metadata, "sessions", clock=at(moment))

    try:
        migrate(engine, sessions.db.MIGRATIONS)
        monitors = []
        for number in range(rooms):
            room_id, patient_id, plan_id, appointment_id = (str(uuid.uuid4()) for _ in range(4))
            deliver(events.ROOM_CHANGED, "scheduling", {"room_id": room_id, "name": f"Infusion {number:03d}", "kind": "infusion",
                                                        "active": True, "room_version": 1})
            deliver(events.PLAN_ACTIVATED, "records", {
                "plan_id": plan_id, "patient_id": patient_id, "infusion_minutes": 240, "plan_sequence": 1,
                "drugs": [{"name": "ketorolac", "dose": "30", "unit": "mg", "route": "IV", "purpose": "pain"}]})
            deliver(events.APPOINTMENT_CHECKED_IN, "scheduling", {
                "appointment_id": appointment_id, "patient_id": patient_id, "kind": "infusion", "room_id": room_id,
                "room_name": f"Infusion {number:03d}", "plan_id": plan_id, "starts_at": started_at,
                "ends_at": started_at + timedelta(hours=4), "checked_in_at": started_at - timedelta(minutes=10)})
            with engine.connect() as connection:
                session_id = connection.execute(sa.text("SELECT id FROM sessions WHERE appointment_id = :id"),
                                                {"id": appointment_id}).scalar_one()
            device = register_device(unit_of_work(started_at - timedelta(minutes=5)), room_id, f"Monitor {number:03d}", "bench")
            start_session(unit_of_work(started_at), session_id, "bench")
            monitors.append((device["token"], session_id))
        return monitors
    finally:
        engine.dispose()


def raw_reading(session_id: str, measured_at: datetime, values: dict) -> dict:
    """One reading row as sessions stores a full set that scores 0, for the raw insert."""
    from psycopg.types.json import Json

    points = {parameter: 0 for parameter in ("respiratory_rate", "spo2", "on_oxygen", "systolic", "heart_rate", "consciousness",
                                             "temperature")}
    return {"id": str(uuid.uuid4()), "session_id": session_id, "entered_by": "bench", "measured_at": measured_at,
            "received_at": datetime.now(timezone.utc), **values, "news2_total": 0, "news2_points": Json(points),
            "news2_complete": True, "news2_filled_in": Json([]), "alert_level": None}


class Monitors:
    """Hands out request bodies: each monitor's readings in its own time order, never one time twice."""

    def __init__(self, monitors: list[tuple[str, str]], first: datetime):
        self.monitors = monitors
        self.next_time = {token: first for token, _ in monitors}
        self.turn = 0

    def take(self, requests: int, per_request: int) -> list[tuple[dict, bytes]]:
        jobs = []
        for _ in range(requests):
            token, _session = self.monitors[self.turn % len(self.monitors)]
            self.turn += 1
            readings = []
            for _ in range(per_request):
                readings.append({**STEADY, "measured_at": self.next_time[token].isoformat()})
                self.next_time[token] += SPACING
            jobs.append(({"Authorization": f"Bearer {token}"}, json.dumps({"readings": readings}).encode()))
        return jobs


# --- the raw insert ceiling ------------------------------------------------------------------


def _raw_process(url: str, columns: list[str], session_id: str, seconds: float, start_at: float, out) -> None:
    rows_written = 0
    placeholders = ", ".join(["%s"] * len(columns))
    statement = f"INSERT INTO readings ({', '.join(columns)}) VALUES ({placeholders})"
    base = datetime(2030, 1, 7, 14, 0, tzinfo=timezone.utc)
    with psycopg.connect(url) as connection:
        while time.time() < start_at:
            time.sleep(0.001)
        deadline = start_at + seconds
        serial = 0
        while time.time() < deadline:
            batch = []
            for _ in range(BATCH):
                serial += 1
                batch.append(_raw_row(columns, session_id, base + timedelta(milliseconds=serial) + timedelta(days=os.getpid() % 1000)))
            with connection.transaction(), connection.cursor() as cursor:
                cursor.executemany(statement, batch)
            rows_written += len(batch)
    out.put(rows_written)


def _raw_row(columns: list[str], session_id: str, measured_at: datetime) -> tuple:
    row = raw_reading(session_id, measured_at, STEADY)
    return tuple(row.get(column) for column in columns)


def raw_insert(url: str, session_id: str, connections: int, seconds: float) -> float:
    """Reading rows/s written straight into sessions' readings table, 20 per batch, `connections` at once."""
    columns = sorted(raw_reading(session_id, datetime.now(timezone.utc), STEADY))
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    start_at = time.time() + 0.5
    workers = [context.Process(target=_raw_process, args=(url, columns, session_id, seconds, start_at, out)) for _ in range(connections)]
    for worker in workers:
        worker.start()
    total = sum(out.get(timeout=seconds + 60) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
    return total / seconds


# --- memory ---------------------------------------------------------------------------------


def worker_memory_mb(master: int) -> list[float]:
    """Resident set (VmRSS) of each child of the gunicorn master, in MB."""
    sizes = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            if parent != master:
                continue
            with open(f"/proc/{entry}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        sizes.append(int(line.split()[1]) / 1024)
        except OSError:
            continue
    return sorted(sizes)


def stored_readings(url: str) -> int:
    with psycopg.connect(url) as connection:
        return connection.execute("SELECT count(*) FROM readings").fetchone()[0]


# --- the run --------------------------------------------------------------------------------


def measure(args, stack: ExitStack) -> None:
    server_url, source = start_postgres(stack, scratch_directory(stack, "clinic-bench-vitals-"))
    work = Path(tempfile.mkdtemp(prefix="clinic-bench-logs-"))
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    sessions_url = fresh_database(stack, server_url, "bench_sessions")
    raw_url = fresh_database(stack, server_url, "bench_raw")
    baseline_url = fresh_database(stack, server_url, "bench_baseline")
    print(f"servers: {source}")
    print(f"{describe_postgres(sessions_url)}; {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"gunicorn: {args.workers} workers x {args.threads} threads (gthread), keep-alive; "
          f"load: {args.clients} closed-loop clients in {args.processes} processes; open loop {args.rate:g} readings/s")
    print("note: the load generator runs on this machine too and takes CPU from gunicorn and PostgreSQL")
    sys.stdout.flush()

    started_at = datetime.now(timezone.utc) - timedelta(hours=3)
    monitors = seed_sessions(sessions_url, args.rooms, started_at)
    raw_monitors = seed_sessions(raw_url, 1, started_at)
    seed_baseline(baseline_url)
    settle(sessions_url, ("rooms", "sessions", "devices"))
    print(f"seeded: {len(monitors)} infusion rooms, each with a started session and a registered monitor")
    sys.stdout.flush()

    # The web writes events to the outbox only and never connects to the broker (no relay runs here): no
    # broker, so no broker account can matter to what is measured.
    env = {"CLINIC_TIMEZONE": TIMEZONE, "CLINIC_ENV": "development", "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/%2F"}
    # The service's own ceiling is measured, not the rate limits (one caller, one address, far past them).
    env.update(LOAD_TEST_LIMITS_ENV)
    json_headers = {"Content-Type": "application/json"}
    readings = Monitors(monitors, started_at + timedelta(minutes=1))
    with ExitStack() as servers:
        base_port, base_pid = start_gunicorn(servers, "benchmarks.booking_baseline:create_app()",
                                             {**env, "DATABASE_URL": baseline_url}, args, work / "baseline.log")
        port, pid = start_gunicorn(servers, "sessions.app:create_app()", {**env, "DATABASE_URL": sessions_url}, args,
                                   work / "sessions.log")
        postmaster = local_postmaster(server_url)
        base_meter, meter = CpuMeter(base_pid, postmaster), CpuMeter(pid, postmaster)
        per_round = int(args.round_seconds * 4000) + 1000
        # A short warm-up of each, not counted.
        closed_loop(base_port, "/rows", json_headers, baseline_jobs(per_round), args.warmup_seconds, args.clients, args.processes)
        warmup = closed_loop(port, "/vitals", json_headers, readings.take(per_round // 4, BATCH), args.warmup_seconds, args.clients,
                             args.processes)
        # Each round: the raw insert, batches, the baseline, single readings, one after the other, so
        # that a slow spell of the machine (a virtual machine's speed drifts by tens of percent) falls
        # on a figure and its ceiling alike; each ratio is the median round's.
        rounds = []
        for number in range(1, args.rounds + 1):
            raw = raw_insert(raw_url, raw_monitors[0][1], args.workers, args.round_seconds)
            batches = closed_loop(port, "/vitals", json_headers, readings.take(per_round // 4, BATCH), args.round_seconds,
                                  args.clients, args.processes)
            base_round = closed_loop(base_port, "/rows", json_headers, baseline_jobs(per_round), args.round_seconds, args.clients,
                                     args.processes, base_meter)
            single_round = closed_loop(port, "/vitals", json_headers, readings.take(per_round, 1), args.round_seconds, args.clients,
                                       args.processes, meter)
            rounds.append(Round(raw, batches, base_round, single_round))
            print(f"round {number}: raw insert {raw:,.0f} readings/s, batches of {BATCH} {batches.per_second(201) * BATCH:,.0f} "
                  f"({batches.per_second(201) * BATCH / max(raw, 1e-9):.0%}); baseline {base_round.per_second():,.0f} requests/s, "
                  f"one reading per request {single_round.per_second(201):,.0f} "
                  f"({single_round.per_second(201) / max(base_round.per_second(), 1e-9):.0%})")
            sys.stdout.flush()
        base_latency = open_loop(base_port, "/rows", json_headers, baseline_jobs(int(args.rate * args.latency_seconds)), args.rate,
                                 args.latency_seconds)
        latency = open_loop(port, "/vitals", json_headers, readings.take(int(args.rate * args.latency_seconds), 1), args.rate,
                            args.latency_seconds)
        memory = worker_memory_mb(pid)
        failures = [line for line in (work / "sessions.log").read_text(errors="replace").splitlines() if "ERROR" in line][:5]

    answered = (warmup.count(201) + sum(r.batches.count(201) for r in rounds)) * BATCH + sum(r.singles.count(201) for r in rounds) \
        + latency.count(201)
    stored = stored_readings(sessions_url)
    report(args, rounds, base_latency, latency, memory, answered, stored, failures)


@dataclass
class Round:
    raw: float          # readings/s written straight into the table
    batches: Results    # the service, 20 readings per request
    baseline: Results   # the bare one-row insert
    singles: Results    # the service, one reading per request


def report(args, rounds: list[Round], base_latency, latency, memory, answered, stored, failures) -> None:
    batch_rate = statistics.median(r.batches.per_second(201) * BATCH for r in rounds)
    raw = statistics.median(r.raw for r in rounds)
    raw_share = statistics.median(r.batches.per_second(201) * BATCH / r.raw for r in rounds if r.raw)
    single_share = statistics.median(r.singles.per_second(201) / r.baseline.per_second() for r in rounds if r.baseline.per_second())
    base_peak = Results([a for r in rounds for a in r.baseline.answers], args.rounds * args.round_seconds,
                        sum_cpu(r.baseline.cpu for r in rounds))
    peak = Results([a for r in rounds for a in r.singles.answers], args.rounds * args.round_seconds,
                   sum_cpu(r.singles.cpu for r in rounds))
    batches = Results([a for r in rounds for a in r.batches.answers], args.rounds * args.round_seconds)
    p99 = latency.percentile(0.99)
    heaviest = max(memory) if memory else float("nan")

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    rows = [
        (f"batches of {BATCH}: readings/s (closed loop, median round)", f"raw insert {raw:,.0f}", f"{batch_rate:,.0f}",
         f"{raw_share:.0%} of raw insert (median round)",
         f">= {BATCH_TARGET:,} and >= {RAW_SHARE:.0%}: {met(batch_rate >= BATCH_TARGET and raw_share >= RAW_SHARE)}"),
        ("one reading per request: requests/s", f"{base_peak.per_second():,.0f}", f"{peak.per_second(201):,.0f}",
         f"{single_share:.0%} of baseline (median round)", f">= {SINGLE_SHARE:.0%}: {met(single_share >= SINGLE_SHARE)}"),
        (f"latency p50 at {args.rate:g}/s (open loop)", f"{base_latency.percentile(0.50):.1f} ms", f"{latency.percentile(0.50):.1f} ms",
         "", ""),
        (f"latency p99 at {args.rate:g}/s (open loop)", f"{base_latency.percentile(0.99):.1f} ms", f"{p99:.1f} ms", "",
         f"<= {LATENCY_P99_MS} ms: {met(p99 <= LATENCY_P99_MS)}"),
        ("resident memory per gunicorn worker", "", ", ".join(f"{size:.0f} MB" for size in memory), "",
         f"< {MEMORY_MB} MB: {met(heaviest < MEMORY_MB)}"),
        ("readings stored", "", f"{stored:,}", f"{answered:,} answered as stored", f"equal: {met(stored == answered)}"),
        *cpu_rows(base_peak, peak),
    ]
    print_table(("", "ceiling", "sessions", "ratio / check", "target"), rows)
    print()
    print(f"answers: batches {batches.statuses()}; singles {peak.statuses()}; latency {latency.statuses()}")
    if failures:
        print("errors logged by the sessions service (first lines):")
        for line in failures:
            print(f"  {line[:200]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of raw insert, batches, baseline and singles in turn (default 3)")
    parser.add_argument("--round-seconds", type=float, default=4, help="closed-loop measurement per phase and round (default 4)")
    parser.add_argument("--warmup-seconds", type=float, default=2, help="uncounted closed loop of each server first (default 2)")
    parser.add_argument("--latency-seconds", type=float, default=20, help="open-loop duration per server (default 20)")
    parser.add_argument("--rate", type=float, default=500, help="open-loop offered readings/s, one per request (default 500)")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients (default 8)")
    parser.add_argument("--processes", type=int, default=2, help="generator processes for the closed loop (default 2)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers for both servers (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker for both servers (default 1)")
    parser.add_argument("--rooms", type=int, default=40, help="infusion rooms, each with a session and a monitor (default 40)")
    args = parser.parse_args(argv)
    counts = (args.rounds, args.clients, args.processes, args.workers, args.threads, args.rooms)
    if min(counts) < 1 or args.clients % args.processes:
        parser.error("counts must be at least 1, and --clients a multiple of --processes")
    started = time.perf_counter()
    with ExitStack() as stack:
        measure(args, stack)
    print(f"\ntotal run time {time.perf_counter() - started:.1f}s (including starting and stopping the servers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
