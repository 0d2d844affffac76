"""`make run`: the whole clinic on one machine, on its embedded defaults, kept running.

Past 400 lines: one supervisor, and what it starts in order (broker, databases, apps, the demo) reads
best in one place.

Starts a local RabbitMQ (unless RABBITMQ_URL is set), a local SMTP mail sink that keeps every
message under var/mail/ (Maildir), and for each service its migrations, its web app and its worker,
on SQLite files under var/. Then it watches them:

- a process that exits without being asked to (a web app, a worker, the mail sink, the broker it
  started) is started again after a delay that doubles with each failure in a row (1 s, 2 s, 4 s …
  at most 30 s; back to 1 s once it has stayed up a minute), and the terminal says so in one line;
  the others keep running. The broker keeps its durable queues and messages under var/rabbitmq/.
- Ctrl-C (SIGINT) or SIGTERM stops everything it started, the broker's Erlang port mapper (epmd)
  included; an epmd it did not start (another RabbitMQ on the machine) is left alone.
- It refuses to start while processes an earlier run started from the same var directory still run
  (a supervisor killed with SIGKILL cannot stop its children), naming them and how to stop them,
  rather than start a second clinic beside them.

Every port listens on 127.0.0.1 only (CLINIC_METRICS_HOST=127.0.0.1 for the workers' metrics ports).

Ports, each moved by CLINIC_PORT_OFFSET:
  web apps            8101-8104 (scheduling, sessions, records, notifications)
  web apps' metrics   9101-9104 (/metrics, /healthz of each gunicorn master)
  workers' metrics    9201-9204
  mail sink           8025 (SMTP_PORT)
  RabbitMQ            5672, or a free port when that is taken (only when it starts one)

Environment:
  CLINIC_VAR_DIR      where the databases, logs, pid files, mail and broker files go (var/)
  CLINIC_PORT_OFFSET  added to every port above (0), to run a second clinic beside the first
  SMTP_PORT           the mail sink's port before the offset (8025)
  RABBITMQ_URL        a running broker to use instead of starting one (every service then connects
                      as its one user, which is made the publisher of every prefix)
The broker it starts has an account per service and the operations account (clinic.broker_accounts),
with passwords generated once into var/rabbitmq/accounts.json; each service connects as its own, and
no other account exists (no guest: one left by an earlier run is deleted). The `clinic` command's
listings and replays use the operations account, whose URL the banner gives; no service is given it.
Its Erlang distribution port and port mapper listen on 127.0.0.1 only.
Everything under the var directory is for its owner only: the directory is 0700 and the processes
it starts create files with umask 077 (databases, logs, mail).
Each process logs to var/<name>.log; var/<name>.pid holds its process id while it runs.

The demo clinic (clinic.demo): once every app answers, on the first start of each day (the marker
var/demo/seeded holds when), `clinic seed-demo` seeds rooms with monitors, office hours, patients with
plans and today's appointments through the apps' APIs (on a later day it tops up today's appointments);
then `clinic simulate-monitors` posts vital signs, kept running like the others. The banner says
whether the demo was seeded. CLINIC_DEMO=off: neither.
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from clinic import broker_accounts, bus, demo
from clinic.config import (
    OPERATOR_ACCOUNT,
    SERVICES,
    ConfigurationError,
    default_database_url,
    load_demo_settings,
    load_settings,
    read_int,
    web_port,
)
from clinic.db import create_engine
from clinic.files import write_atomically
from clinic.localservers import LocalRabbitMQ, ServerNotAvailable, accepts_connections, port_is_free
from clinic.migrations import migrate

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("CLINIC_VAR_DIR", ROOT / "var")).resolve()
BIN = Path(sys.executable).parent

FIRST_DELAY, LONGEST_DELAY = 1.0, 30.0
# A process that stayed up this long is healthy again: its next crash waits the first delay.
STAYED_UP_SECONDS = 60.0
STOP_SECONDS = 15.0


class Ports:
    """Every port of one run, moved by the offset."""

    def __init__(self, offset: int, mail: int):
        self.offset = offset
        self.web = {service: web_port(service, offset) for service in SERVICES}
        self.web_metrics = {service: 9101 + index + offset for index, service in enumerate(SERVICES)}
        self.worker_metrics = {service: 9201 + index + offset for index, service in enumerate(SERVICES)}
        self.mail = mail + offset
        self.rabbitmq = 5672 + offset


class Supervised:
    """One process kept running: started again after a growing delay when it exits unasked."""

    def __init__(self, name: str, launch: Callable[[], subprocess.Popen], log: Path):
        self.name = name
        self._launch = launch
        self.log = log
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.failures_in_a_row = 0
        self.restart_at: float | None = None

    @property
    def pid_file(self) -> Path:
        return VAR / f"{self.name}.pid"

    def start(self) -> None:
        self.restart_at = None
        self.process = self._launch()
        self.started_at = time.monotonic()
        self.pid_file.write_text(f"{self.process.pid}\n")

    def watch(self, now: float) -> None:
        """Notice an exit (and schedule the restart), or restart when its delay has passed."""
        if self.process is not None and self.process.poll() is not None:
            code = self.process.returncode
            _end_leftovers(self.process)
            self.process = None
            self.pid_file.unlink(missing_ok=True)
            if now - self.started_at >= STAYED_UP_SECONDS:
                self.failures_in_a_row = 0
            delay = min(LONGEST_DELAY, FIRST_DELAY * 2 ** self.failures_in_a_row)
            self.failures_in_a_row += 1
            self.restart_at = now + delay
            say(f"{self.name} {_how_it_ended(code)}; starting it again in {delay:g} s "
                f"(log: {self.log})", error=True)
        elif self.process is None and self.restart_at is not None and now >= self.restart_at:
            self.start()


def main() -> int:
    try:
        ports = Ports(read_int(os.environ, "CLINIC_PORT_OFFSET", 0), read_int(os.environ, "SMTP_PORT", 8025))
    except ConfigurationError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2
    # Patient data (the SQLite files, the mail) and the broker's passwords: for the owner only.
    os.umask(0o077)
    VAR.mkdir(parents=True, exist_ok=True)
    VAR.chmod(0o700)
    left = _left_running()
    if left:
        print(f"make run: processes of an earlier make run from {VAR} still run (its supervisor was killed, and "
              f"could not stop them): {', '.join(f'{name} (pid {pid})' for name, pid in left.items())}.\n"
              f"Stop them (each with its process group), then run make run again:\n"
              f"  kill -TERM -- {' '.join(f'-{pid}' for pid in left.values())}", file=sys.stderr)
        return 1
    # A Maildir: the sink writes each message to tmp/ and moves it to new/, which must both exist.
    for folder in ("tmp", "new", "cur"):
        (VAR / "mail" / folder).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CLINIC_VAR_DIR=str(VAR), SMTP_HOST="127.0.0.1", SMTP_PORT=str(ports.mail),
               CLINIC_METRICS_HOST="127.0.0.1")
    # The demo's on-call staff, so that vital-sign alerts are mailed (to the sink) unless told otherwise.
    env.setdefault("ONCALL_EMAILS", "on-call@clinic.localhost")

    # Read once: the broker's accounts, their passwords and the services' URLs all follow these settings
    # (CLINIC_BROKER_PUBLISHERS among them).
    cli_settings = load_settings("cli", env)
    stopping = _stop_on_signals()
    rabbit: LocalRabbitMQ | None = None
    supervised: list[Supervised] = []
    service_urls: dict[str, str] = {}
    try:
        if not os.environ.get("RABBITMQ_URL"):
            passwords = _broker_passwords(VAR / "rabbitmq", cli_settings)
            rabbit = LocalRabbitMQ(VAR / "rabbitmq", port=ports.rabbitmq if port_is_free(ports.rabbitmq) else None,
                                   definitions=broker_accounts.broker_definitions(
                                       cli_settings, passwords, SERVICES))
            say(f"starting RabbitMQ on 127.0.0.1:{rabbit.port} (files in {rabbit.base})")
            broker = Supervised("rabbitmq", rabbit.launch, rabbit.base / "log")
            supervised.append(broker)
            broker.start()
            if not _wait_for_port(rabbit.port, 90, broker.process, stopping):
                return 0
            _remove_leftover_guest(rabbit, cli_settings)
            # No account's credentials for what is not a service: each service gets its own below.
            env["RABBITMQ_URL"] = f"amqp://127.0.0.1:{rabbit.port}/%2F"
            service_urls = _use_own_accounts(env["RABBITMQ_URL"], cli_settings, passwords)
        else:
            _one_account_publishes_everything(env, cli_settings)
        _prepare_development_keys(env)
        _prepare_databases_and_queues(env, service_urls)
        supervised.append(_child("mail", [str(BIN / "python"), "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{ports.mail}",
                                          "-c", "aiosmtpd.handlers.Mailbox", str(VAR / "mail")], env))
        for service in SERVICES:
            web_env = dict(_service_env(env, service_urls, service), CLINIC_METRICS_PORT=str(ports.web_metrics[service]))
            supervised.append(_child(f"{service}-web", [
                str(BIN / "gunicorn"), "-c", "python:clinic.gunicorn_conf", "--bind", f"127.0.0.1:{ports.web[service]}",
                "--workers", "1", "--threads", "4", "--log-level", "warning", f"{service}.app:create_app()"], web_env))
            worker_env = dict(_service_env(env, service_urls, service), CLINIC_METRICS_PORT=str(ports.worker_metrics[service]))
            supervised.append(_child(f"{service}-worker", [str(BIN / f"{service}-worker")], worker_env))
        for process in supervised:
            if process.process is None:
                process.start()
        _supervise(supervised, ports, env, service_urls, stopping)
    except ServerNotAvailable as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    except bus.BROKER_ERRORS as exc:
        print(f"make run: RabbitMQ at RABBITMQ_URL is not reachable ({type(exc).__name__})", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the stopping short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(flush=True)  # off the line where the terminal echoed ^C
        say("stopping…")
        _stop_all([process for process in supervised if process.name != "rabbitmq"])
        if rabbit is not None:
            rabbit.stop()  # the node (the last, so that the workers stop cleanly) and its epmd
            (VAR / "rabbitmq.pid").unlink(missing_ok=True)
        say("stopped")
    return 0


class _Stopping:
    requested = False


def _stop_on_signals() -> _Stopping:
    stopping = _Stopping()

    def _stop(*_):
        stopping.requested = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    return stopping


def _prepare_development_keys(env: dict) -> None:
    """The development key pair (clinic.identity) before any service starts: `clinic token` signs with it,
    and the services read its public half. Nothing to do when CLINIC_OIDC_JWKS_URL names a provider."""
    from clinic import identity

    settings = load_settings(SERVICES[0], env)
    if settings.accepts_development_tokens:
        identity.development_key_pair(identity.development_jwks_path(settings))


def _broker_passwords(directory: Path, settings) -> dict[str, str]:
    """The accounts' passwords for the local broker: generated once, kept in accounts.json (owner only)."""
    import secrets

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "accounts.json"
    accounts = broker_accounts.all_accounts(settings, SERVICES)
    kept = json.loads(path.read_text()) if path.exists() else {}
    passwords = {account: kept.get(account) or secrets.token_urlsafe(24) for account in accounts}
    if passwords != kept:
        write_atomically(path, json.dumps(passwords))
    return passwords


def _use_own_accounts(broker_url: str, settings, passwords: dict[str, str]) -> dict[str, str]:
    """{service: its broker URL}, each with the service's own account, for a broker this run started."""
    service_urls = {}
    for service in SERVICES:
        account = broker_accounts.account_of(settings, service)
        service_urls[service] = broker_accounts.url_for_account(broker_url, account, passwords[account])
    # The operations account (it may publish as anyone) stays out of every process's environment: the
    # banner says where its password is, for the `clinic` command.
    return service_urls


def _remove_leftover_guest(rabbit: LocalRabbitMQ, settings) -> None:
    """Delete guest/guest when the broker still lets it in: an earlier make run kept it, an administrator,
    and loading the definitions at boot adds accounts but removes none."""
    import pika.exceptions

    try:
        bus.connect(settings.with_changes(rabbitmq_url=rabbit.url)).close()
    except pika.exceptions.ProbableAuthenticationError:
        return
    rabbit.ctl("delete_user", "guest")
    say("deleted the guest account an earlier make run left in the broker")


def _one_account_publishes_everything(env: dict, settings) -> None:
    """A broker given by RABBITMQ_URL: every service connects as that URL's user, so that user must be
    the publisher of every prefix, or every consumer would refuse every event."""
    user = bus.broker_user(settings)
    env.setdefault("CLINIC_BROKER_PUBLISHERS", ",".join(f"{prefix}={user}" for prefix, _ in settings.broker_publishers))
    say(f"RABBITMQ_URL given: every service connects as {user}, which may then publish any event "
        "(run without RABBITMQ_URL for an account per service)")


def _service_env(env: dict, service_urls: dict[str, str], service: str) -> dict:
    """The environment of one service's processes: its own broker account's URL (service_urls is empty when
    RABBITMQ_URL was given: every service then connects as that URL's user)."""
    return dict(env, RABBITMQ_URL=service_urls[service]) if service in service_urls else env


def _prepare_databases_and_queues(env: dict, service_urls: dict[str, str]) -> None:
    for service in SERVICES:
        settings = load_settings(service, _service_env(env, service_urls, service))
        if not env.get("DATABASE_URL"):
            settings = settings.with_changes(database_url=default_database_url(service, VAR))
        migrate(create_engine(settings.database_url), importlib.import_module(f"{service}.db").MIGRATIONS)
        # Every consumer's queue before any relay runs: a migration may announce what exists already
        # (scheduling's rooms), and an event published before its consumer's queue would be unrouted.
        consumed = importlib.import_module(f"{service}.worker").handlers(settings)
        if consumed:
            bus.declare_consumer(settings, consumed)


def _left_running() -> dict[str, int]:
    """{name: pid} of the processes that var/*.pid name and that an earlier run started from this var
    directory (their environment says so) and that still run. A pid file naming a process that has
    ended, or a pid that another program has since been given, is stale: it is removed."""
    running = {}
    for pid_file in sorted(VAR.glob("*.pid")):
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            pid = None
        if pid is not None and _started_here(pid):
            running[pid_file.stem] = pid
        else:
            pid_file.unlink(missing_ok=True)
    return running


def _started_here(pid: int) -> bool:
    """True when the process runs (a zombie has ended) and was started by a run on this var directory:
    the services, the mail sink and gunicorn have CLINIC_VAR_DIR set to it, RabbitMQ its HOME under it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        environment = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except (OSError, IndexError):
        return False
    marks = {f"CLINIC_VAR_DIR={VAR}".encode(), f"HOME={VAR / 'rabbitmq'}".encode()}
    return state != "Z" and bool(marks & environment)


def _child(name: str, command: list[str], env: dict, kind: type[Supervised] = Supervised) -> Supervised:
    def launch() -> subprocess.Popen:
        with open(VAR / f"{name}.log", "ab") as log:
            # A session of its own: Ctrl-C reaches only this supervisor, which stops the children in
            # order, and a crashed child's leftovers (gunicorn's workers) can be ended as a group.
            return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=ROOT, start_new_session=True)

    return kind(name, launch, VAR / f"{name}.log")


def _supervise(supervised: list[Supervised], ports: Ports, env: dict, service_urls: dict[str, str],
               stopping: _Stopping) -> None:
    """Until stopped: restart what exits; show the banner once every app and the mail sink answer."""
    waiting_for = [ports.mail, *ports.web.values()]
    demo_clinic = _DemoClinic(env)
    while not stopping.requested:
        now = time.monotonic()
        for process in supervised:
            process.watch(now)
        if waiting_for:
            waiting_for = [port for port in waiting_for if not accepts_connections(port)]
            if not waiting_for:
                demo_clinic.begin(supervised)
        elif demo_clinic.status is None and demo_clinic.seeded(supervised):
            _banner(ports, env, service_urls, demo_clinic.status)
        time.sleep(0.2)


class _OneShot(Supervised):
    """A process run once to its end (the demo's seed), never started again by the watch."""

    def watch(self, now: float) -> None:
        pass


class _DemoClinic:
    """The demo clinic (clinic.demo): once every app answers, `clinic seed-demo` runs unless an earlier start
    seeded it today (its marker), then `clinic simulate-monitors` is supervised like the others.
    CLINIC_DEMO=off: neither. A seed that fails leaves the marker as it was, and the next start tries again."""

    def __init__(self, env: dict):
        self.env = env
        self.settings = load_demo_settings(env)
        self.marker = demo.marker_path(self.settings)
        self.seeding: Supervised | None = None
        self.status: str | None = None  # the banner's line, once the seed has ended

    def begin(self, supervised: list[Supervised]) -> None:
        if not self.settings.enabled:
            return
        if not demo.seeded_today(self.settings, self.env):
            say(f"seeding the demo clinic (log: {VAR / 'demo-seed.log'}; CLINIC_DEMO=off turns the demo off)")
            self.seeding = _child("demo-seed", [str(BIN / "clinic"), "seed-demo"], self.env, kind=_OneShot)
            supervised.append(self.seeding)
            self.seeding.start()

    def seeded(self, supervised: list[Supervised]) -> bool:
        """True once the seed has ended (or none was needed): status then says how it went."""
        if not self.settings.enabled:
            self.status = "demo clinic: off (CLINIC_DEMO=off)"
            return True
        failed = False
        if self.seeding is not None:
            if self.seeding.process is None or self.seeding.process.poll() is None:
                return False
            # A top-up that fails leaves an earlier day's marker in place: the exit status tells.
            failed = self.seeding.process.returncode != 0
            self.seeding.process = None
            self.seeding.pid_file.unlink(missing_ok=True)
        self.status = ""
        if failed or not self.marker.exists():
            self.status = (f"demo clinic: NOT (fully) seeded for today, see {VAR / 'demo-seed.log'}; the next make run "
                           "tries again (CLINIC_DEMO=off turns the demo off)")
            if not self.marker.exists():
                return True
            self.status += "\n"  # an earlier day's demo is there still: its monitors run
        summary = json.loads(self.marker.read_text())
        earlier = summary["seeded_at"][:16].replace("T", " ")
        if failed:
            when = f"as seeded on {earlier} UTC"
        elif self.seeding is not None:
            when = "seeded now"
        else:
            when = f"seeded on an earlier start today ({earlier} UTC)"
        self.status += (f"demo clinic: {when}: {demo.describe(summary)}.\n"
                       f"                 Simulated monitors post vital signs (log: {VAR / 'monitors.log'}). "
                       "CLINIC_DEMO=off turns the demo off.")
        monitors = _child("monitors", [str(BIN / "clinic"), "simulate-monitors"], self.env)
        supervised.append(monitors)
        monitors.start()
        return True


def _stop_all(supervised: list[Supervised]) -> None:
    """SIGTERM to every process group at once, SIGKILL to what is still there after STOP_SECONDS."""
    running = [process.process for process in supervised if process.process is not None]
    for process in running:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _end_leftovers(process)
    for process in supervised:
        process.process = None
        process.pid_file.unlink(missing_ok=True)


def _end_leftovers(process: subprocess.Popen) -> None:
    """SIGKILL whatever is left of the process's group, e.g. gunicorn workers of a master that was
    killed: they would hold its port and its restart would fail."""
    _signal_group(process, signal.SIGKILL)
    if process.poll() is None:
        process.wait(timeout=10)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _how_it_ended(code: int) -> str:
    if code == 0:
        # Unasked, but as a process that was told to stop does: RabbitMQ's start script, for one, when
        # its node was killed.
        return "stopped"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _wait_for_port(port: int, timeout: float, process: subprocess.Popen, stopping: _Stopping) -> bool:
    """True once the port answers; False when stopped first. A server that exits or never answers is
    ServerNotAvailable."""
    deadline = time.monotonic() + timeout
    while not stopping.requested:
        if accepts_connections(port):
            return True
        if process.poll() is not None:
            raise ServerNotAvailable(f"RabbitMQ exited with code {process.returncode} before accepting connections "
                                     f"(log: {VAR / 'rabbitmq'}/log)")
        if time.monotonic() > deadline:
            raise ServerNotAvailable(f"RabbitMQ did not accept connections on port {port} within {timeout:.0f}s")
        time.sleep(0.2)
    return False


def say(line: str, error: bool = False) -> None:
    """One line on the terminal, with the time it happened."""
    print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr if error else sys.stdout, flush=True)


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def _banner(ports: Ports, env: dict, service_urls: dict[str, str], demo: str = "") -> None:
    print("\nThe clinic is running:")
    for service in SERVICES:
        print(f"  {service:<14} http://127.0.0.1:{ports.web[service]}   "
              f"metrics: web :{ports.web_metrics[service]}, worker :{ports.worker_metrics[service]}")
    print("                 (each app: /docs, /openapi.json; each metrics port: /metrics, /healthz)")
    print(f"  mail sink      smtp://127.0.0.1:{ports.mail} → {VAR / 'mail'}")
    print(f"  RabbitMQ       {_without_credentials(env['RABBITMQ_URL'])}")
    print(f"  logs           {VAR}/*.log (process ids in {VAR}/*.pid)")
    # The token is signed with the key pair under the var directory: `clinic` must look in the same one.
    var_dir = "" if VAR == (ROOT / "var").resolve() else f"CLINIC_VAR_DIR={shlex.quote(str(VAR))} "
    print(f"\nA staff token for the API: {var_dir}.venv/bin/clinic token --role front_desk")
    if service_urls:
        # The password stays in its file (token_urlsafe: nothing to percent-encode in the URL).
        read = f"$(.venv/bin/python -c 'import json; print(json.load(open(\"{VAR}/rabbitmq/accounts.json\"))[\"{OPERATOR_ACCOUNT}\"])')"
        address = _without_credentials(env["RABBITMQ_URL"]).removeprefix("amqp://")
        print(f"Listings and replays (clinic dead-letters|unrouted list|replay) connect as the operations account "
              f"(the broker has no guest):\n"
              f"  export CLINIC_OPERATOR_RABBITMQ_URL=\"amqp://{OPERATOR_ACCOUNT}:{read}@{address}\"")
    print(f"\n{demo}\n" if demo else "", end="")
    print("A process that stops is started again. Ctrl-C stops everything.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
