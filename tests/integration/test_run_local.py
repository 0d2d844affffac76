"""`make run` (scripts/run_local.py) keeps the clinic running, with real processes: its own RabbitMQ
from the local packages (as `make run` starts it), the four services' web apps and workers on SQLite
in a var directory of the test's own, every port moved by CLINIC_PORT_OFFSET.

A worker killed twice in a row is started again each time, after a growing delay, and the terminal
says so; a patient registered while it is down reaches its contact copy once it is back; the other
processes keep running throughout; the workers' metrics ports listen on the loopback only; a broker
whose node is killed is said to have stopped and is started again. Ctrl-C then stops every process it
started, RabbitMQ and the Erlang port mapper that RabbitMQ started included. It refuses to start
while processes an earlier run left (its supervisor killed) still run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pika.exceptions
import pytest
import requests

from clinic import broker_accounts, bus
from clinic.auth import issue_token
from clinic.config import OPERATOR_ACCOUNT, SERVICES, load_settings, web_port
from clinic.db import create_engine
from clinic.localservers import LocalRabbitMQ, accepts_connections, port_is_free, stop_epmd
from clinic.testing import eventually

ROOT = Path(__file__).resolve().parents[2]
# The ports `make run` uses before the offset: apps, web metrics, worker metrics, mail sink, RabbitMQ.
BASE_PORTS = (*range(8101, 8105), *range(9101, 9105), *range(9201, 9205), 8025, 5672)


class SupervisedClinic:
    def __init__(self, process: subprocess.Popen, var: Path, terminal: Path, offset: int):
        self.process = process
        self.var = var
        self.terminal_file = terminal
        self.offset = offset

    def terminal(self) -> str:
        return self.terminal_file.read_text(errors="replace")

    def app(self, service: str) -> str:
        return f"http://127.0.0.1:{web_port(service, self.offset)}"

    def pid(self, name: str) -> int | None:
        """The process id run_local wrote for `name`, None while it is not running."""
        try:
            return int((self.var / f"{name}.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def pids(self) -> dict[str, int]:
        return {path.stem: int(path.read_text()) for path in self.var.glob("*.pid")}


@pytest.fixture
def supervised_clinic(tmp_path):
    with _make_run(tmp_path) as clinic:
        yield clinic


@contextmanager
def _make_run(tmp_path, prepare=None, demo=False):
    """run_local.py on a var directory of the test's own, first given to `prepare(var, offset)` when set;
    with the demo clinic only when `demo`."""
    offset = _free_offset()
    var = tmp_path / "var"
    # As a user's or an earlier run's var directory may be: make run makes it private.
    var.mkdir(mode=0o755)
    var.chmod(0o755)
    if prepare is not None:
        prepare(var, offset)
    env = {name: value for name, value in os.environ.items()
           if name not in ("RABBITMQ_URL", "DATABASE_URL", "CLINIC_OPERATOR_RABBITMQ_URL")}
    # The demo clinic's seed and monitors come and go on their own: tests/integration/test_demo_clinic.py has them.
    env.update(CLINIC_VAR_DIR=str(var), CLINIC_PORT_OFFSET=str(offset), CLINIC_DEMO="on" if demo else "off")
    terminal = tmp_path / "terminal.txt"
    with open(terminal, "wb") as out:
        process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "run_local.py")], env=env, cwd=ROOT,
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    clinic = SupervisedClinic(process, var, terminal, offset)
    clinic.env = env
    try:
        yield clinic
    finally:
        # When the test failed before stopping it: stop it, and whatever it may have left.
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for pid in clinic.pids().values():
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        epmd_port = var / "rabbitmq" / "epmd_port"
        if epmd_port.exists():
            stop_epmd(int(epmd_port.read_text()))


def test_a_killed_worker_is_started_again_and_nothing_is_lost_then_ctrl_c_stops_everything(supervised_clinic):
    clinic = supervised_clinic
    eventually(lambda: all(_healthy(clinic.app(service)) for service in SERVICES), timeout=120, interval=0.2,
               message=f"the four apps to answer /healthz under run_local; its terminal:\n{clinic.terminal()}")
    before = clinic.pids()
    assert {f"{service}-{kind}" for service in SERVICES for kind in ("web", "worker")} | {"mail", "rabbitmq"} <= set(before)

    # Killed twice in a row: started again after 1 s, then after 2 s, and the terminal says so each time.
    first = before["notifications-worker"]
    os.kill(first, signal.SIGKILL)
    eventually(lambda: "notifications-worker was killed by SIGKILL; starting it again in 1 s" in clinic.terminal(),
               timeout=10, message="the terminal to tell of the restart")
    second = eventually(lambda: clinic.pid("notifications-worker") not in (None, first) and clinic.pid("notifications-worker"),
                        timeout=10, message="the worker to be started again")
    assert _alive(second)
    os.kill(second, signal.SIGKILL)
    eventually(lambda: "notifications-worker was killed by SIGKILL; starting it again in 2 s" in clinic.terminal(),
               timeout=10, message="the terminal to tell of the second restart, with a longer delay")

    # A patient registered while the worker is down.
    settings = load_settings("records", env={"CLINIC_VAR_DIR": str(clinic.var)})  # signed with the pair make run made
    headers = {"Authorization": f"Bearer {issue_token(settings, 'desk-1', ['front_desk'])}"}
    patient = {"given_name": "Noor", "family_name": "Haddad", "birth_date": "1990-07-21", "sex": "female",
               "email": "noor@example.org", "phone": "+1 555 010 0199", "preferred_contact": "email"}
    response = requests.post(f"{clinic.app('records')}/patients", json=patient, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    assert clinic.pid("notifications-worker") is None, "the worker came back before the patient was registered"

    third = eventually(lambda: clinic.pid("notifications-worker") not in (None, first, second) and clinic.pid("notifications-worker"),
                       timeout=15, message="the worker to be started again after the second kill")
    import notifications.db as notifications_db

    engine = create_engine(f"sqlite:///{clinic.var / 'notifications.db'}")

    def contact_copy():
        with engine.connect() as connection:
            return notifications_db.get_contact(connection, response.json()["id"])

    copy = eventually(contact_copy, timeout=30, interval=0.2, message="the registration to reach notifications' contact copy")
    engine.dispose()
    assert copy["email"] == "noor@example.org"
    assert _alive(third)
    # The others kept running all along.
    after = clinic.pids()
    assert {name: pid for name, pid in after.items() if name != "notifications-worker"} == \
           {name: pid for name, pid in before.items() if name != "notifications-worker"}

    # Every worker's metrics port listens on the loopback only.
    for index, service in enumerate(SERVICES):
        port = 9201 + index + clinic.offset
        assert _listening_on(port) == {"127.0.0.1"}, f"{service}-worker's metrics port"

    # The broker's node killed: its start script ends with status 0, which is said as a stop, and it
    # is started again.
    rabbitmq = clinic.pid("rabbitmq")
    [node] = [pid for pid, command in _descendants(rabbitmq).items() if "beam.smp" in command]
    os.kill(node, signal.SIGKILL)
    eventually(lambda: "rabbitmq stopped; starting it again in 1 s" in clinic.terminal(), timeout=15,
               message=f"the terminal to tell of the broker's restart; it says:\n{clinic.terminal()}")
    eventually(lambda: clinic.pid("rabbitmq") not in (None, rabbitmq), timeout=15, message="the broker started again")
    eventually(lambda: accepts_connections(5672 + clinic.offset), timeout=90, interval=0.2, message="the broker back")

    # Ctrl-C: every process it started ends, the broker and the broker's own epmd included.
    started = _descendants(clinic.process.pid)
    epmd_port = int((clinic.var / "rabbitmq" / "epmd_port").read_text())
    epmd = _epmd_pid(epmd_port)
    assert epmd is not None, f"no epmd runs for run_local's RabbitMQ on port {epmd_port}"
    assert any("beam.smp" in command for command in started.values()), started
    clinic.process.send_signal(signal.SIGINT)
    assert clinic.process.wait(timeout=60) == 0
    assert clinic.terminal().rstrip().endswith("stopped")
    eventually(lambda: {pid: command for pid, command in {**started, epmd: "epmd"}.items() if _alive(pid)} == {},
               timeout=10, message="every process run_local started to end")
    assert not accepts_connections(epmd_port), "the epmd of run_local's RabbitMQ still answers"
    assert not list(clinic.var.glob("*.pid"))


def test_make_run_keeps_no_shared_broker_account_nor_open_ports_and_its_files_private(tmp_path):
    created_before: set[Path] = set()

    def earlier_run_with_guest(var: Path, offset: int) -> None:
        """The broker directory an earlier make run left: guest/guest, an administrator, in its database."""
        settings = load_settings("cli", env={})
        accounts = broker_accounts.all_accounts(settings, SERVICES)
        earlier = LocalRabbitMQ(var / "rabbitmq", port=5672 + offset, definitions=broker_accounts.broker_definitions(
            settings, {account: "earlier" for account in accounts}, SERVICES, development_guest=True))
        earlier.start()
        try:
            bus.connect(settings.with_changes(rabbitmq_url=earlier.url)).close()   # guest gets in there
        finally:
            earlier.stop()
        created_before.update(var.rglob("*"))

    with _make_run(tmp_path, prepare=earlier_run_with_guest) as clinic:
        eventually(lambda: "The clinic is running" in clinic.terminal(), timeout=120, interval=0.2,
                   message=f"run_local's banner; its terminal:\n{clinic.terminal()}")
        terminal = clinic.terminal()
        broker = f"127.0.0.1:{5672 + clinic.offset}"

        # No guest: the one the earlier run left is deleted, and the banner offers none.
        assert "deleted the guest account an earlier make run left" in terminal
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            bus.connect(load_settings("cli", env={}).with_changes(rabbitmq_url=f"amqp://guest:guest@{broker}/%2F"))
        assert "guest:guest" not in terminal and "export RABBITMQ_URL" not in terminal
        # The token is signed with the key pair of this var directory, not ./var's.
        assert f"CLINIC_VAR_DIR={clinic.var} .venv/bin/clinic token --role front_desk" in terminal

        # The operations account's password reaches no process make run started.
        password = json.loads((clinic.var / "rabbitmq" / "accounts.json").read_text())[OPERATOR_ACCOUNT]
        for name, pid in clinic.pids().items():
            environment = Path(f"/proc/{pid}/environ").read_bytes()
            assert password.encode() not in environment and b"CLINIC_OPERATOR_RABBITMQ_URL" not in environment, name

        # The `clinic` command's listings, as the banner says to run them: as the operations account.
        [export] = [line.strip() for line in terminal.splitlines() if "export CLINIC_OPERATOR_RABBITMQ_URL=" in line]
        listing = subprocess.run(
            ["bash", "-c", f"{export} && {sys.executable} -m clinic.cli dead-letters list records "
                           f"&& {sys.executable} -m clinic.cli unrouted list"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={name: value for name, value in os.environ.items() if not name.endswith("RABBITMQ_URL")})
        assert listing.returncode == 0, listing.stderr
        assert "dead letter(s) in clinic.records.dead" in listing.stdout
        assert "unrouted event(s) in clinic.unrouted" in listing.stdout

        # The broker's Erlang distribution port, and its port mapper, listen on the loopback only.
        [node] = [pid for pid, command in _descendants(clinic.pid("rabbitmq")).items() if "beam.smp" in command]
        node_sockets = _listening_sockets_of(node)
        assert int((clinic.var / "rabbitmq" / "dist_port").read_text()) in {port for _, port in node_sockets}
        assert {address for address, _ in node_sockets} <= LOOPBACK, node_sockets
        epmd_port = int((clinic.var / "rabbitmq" / "epmd_port").read_text())
        epmd_sockets = _listening_sockets_of(_epmd_pid(epmd_port))
        assert epmd_sockets and {address for address, _ in epmd_sockets} <= LOOPBACK, epmd_sockets

        # The var directory is its owner's only, and so is every file make run and its processes made.
        assert clinic.var.stat().st_mode & 0o777 == 0o700
        for pid in clinic.pids().values():
            assert "Umask:\t0077" in Path(f"/proc/{pid}/status").read_text()
        made = [path for path in clinic.var.rglob("*") if path.is_file() and path not in created_before]
        assert {"records.db", "records-web.log", "accounts.json"} <= {path.name for path in made}
        # Only the development key pair's public half is readable by others on purpose (and only its file).
        assert [str(path) for path in made if path.stat().st_mode & 0o077 and path.name != "jwks.json"] == []


def test_make_run_refuses_to_start_beside_what_an_earlier_run_left_running(tmp_path):
    var = tmp_path / "var"
    var.mkdir()
    env = {name: value for name, value in os.environ.items() if name not in ("RABBITMQ_URL", "DATABASE_URL")}
    env.update(CLINIC_VAR_DIR=str(var), CLINIC_PORT_OFFSET=str(_free_offset()))
    # What a supervisor killed with SIGKILL leaves: a child started for this var directory, still running;
    # beside it a pid file of a process that has ended, and one whose pid another program now has.
    left = subprocess.Popen(["sleep", "120"], env=env, start_new_session=True)
    stranger = subprocess.Popen(["sleep", "120"], env={"PATH": os.environ["PATH"]})
    ended = subprocess.Popen(["true"])
    ended.wait()
    (var / "records-worker.pid").write_text(f"{left.pid}\n")
    (var / "mail.pid").write_text(f"{stranger.pid}\n")
    (var / "sessions-web.pid").write_text(f"{ended.pid}\n")
    process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "run_local.py")], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        # It started a clinic instead: stop it as Ctrl-C would.
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
        raise AssertionError("make run started beside the processes an earlier run left") from None
    finally:
        for child in (left, stranger):
            child.kill()
            child.wait()
    assert process.returncode == 1, err
    assert f"records-worker (pid {left.pid})" in err and f"kill -TERM -- -{left.pid}" in err
    assert "mail" not in err and "sessions-web" not in err
    assert out == ""
    assert sorted(path.name for path in var.glob("*.pid")) == ["records-worker.pid"], "stale pid files kept"
    assert not (var / "rabbitmq").exists(), "a broker was started"


def _listening_on(port: int) -> set[str]:
    """The IPv4 addresses on which something listens on `port` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:   # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


LOOPBACK = {"127.0.0.1", "::1"}


def _listening_sockets_of(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on (IPv4 and IPv6), from /proc."""
    inodes = set()
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(descriptor)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:   # 0A: LISTEN
                continue
            address, hex_port = fields[1].split(":")
            raw = bytes.fromhex(address)
            # /proc writes each 32-bit word of the address in the machine's (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, raw), int(hex_port, 16)))
    return found


def _free_offset() -> int:
    """An offset under which every port of `make run` is free, below the ephemeral range that other
    tests' servers take their ports from."""
    for _ in range(100):
        offset = random.randrange(10_000, 23_000)
        if all(port_is_free(port + offset) for port in BASE_PORTS):
            return offset
    raise AssertionError("no free range of ports for run_local")


def _healthy(base: str) -> bool:
    try:
        return requests.get(f"{base}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _alive(pid: int) -> bool:
    """Running (a zombie has ended: only its exit status waits to be collected)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process on the machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        found[int(entry.name)] = (parent, command)
    return found


def _descendants(root: int) -> dict[int, str]:
    processes = _processes()
    found: dict[int, str] = {}
    parents = {root}
    while parents:
        children = {pid for pid, (parent, _) in processes.items() if parent in parents and pid not in found}
        found.update({pid: processes[pid][1] for pid in children})
        parents = children
    return found


def _epmd_pid(port: int) -> int | None:
    """The epmd started with ERL_EPMD_PORT=port (run_local's RabbitMQ starts it; it runs detached)."""
    for pid, (_, command) in _processes().items():
        if "epmd" not in command:
            continue
        try:
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if f"ERL_EPMD_PORT={port}".encode() in environment:
            return pid
    return None
