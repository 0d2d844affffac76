"""RabbitMQ and PostgreSQL started from this machine's Debian packages, in a directory of our own.

Used where no server is given and no Docker engine answers: by `make run` (RabbitMQ)
and by the test fixtures (both). Each server listens on 127.0.0.1 on a free port,
keeps all its files under the directory it is given, and is stopped by stop().

A RabbitMQ node gets an Erlang port mapper (epmd) of its own, on a port of its own, rather than
the machine's shared one on 4369: stop() can then stop the epmd its node started without taking
away the one another node on the machine (another clinic, the test suite's broker) relies on.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from clinic.files import write_atomically

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
RABBITMQCTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
EPMD = Path(shutil.which("epmd") or "/usr/lib/erlang/bin/epmd")
# Erlang's distribution listens on every interface unless told which one.
LOOPBACK_DISTRIBUTION = "-kernel inet_dist_use_interface {127,0,0,1}"


class ServerNotAvailable(RuntimeError):
    """The server could not be found or started; the message says what to install or set."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None, what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerNotAvailable(f"{what} exited with code {process.returncode} before accepting connections")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise ServerNotAvailable(f"{what} did not accept connections on port {port} within {timeout:.0f}s")


class LocalRabbitMQ:
    """A RabbitMQ node of our own, with its own epmd. Run as the current user through the unwrapped
    server script, because the /usr/sbin wrapper switches to the rabbitmq user, who cannot write our
    directory.

    start() starts it and waits until it accepts connections; launch() only starts it (a supervisor
    that starts it again after a crash does not wait). The node's name, its distribution port and
    its epmd port are kept under `base_dir`, so a node started again there finds its durable queues
    and messages, and an epmd left behind by a run that was killed is reused and then stopped.

    With `definitions` (clinic.broker_accounts.broker_definitions) the node loads them at every boot:
    the broker accounts, their permissions and topic permissions, and no default guest user unless
    they name it (RabbitMQ creates guest only on a first boot that loads no definitions). `url` is
    guest's: it connects only to a node without definitions or whose definitions keep guest (the
    test session's broker); broker_accounts.url_for_account(url, ...) gives another account's."""

    def __init__(self, base_dir: Path, port: int | None = None, definitions: dict | None = None):
        if not RABBITMQ_SERVER.exists():
            raise ServerNotAvailable(
                "RabbitMQ is not installed: `apt-get install -y rabbitmq-server` (make test and make run do this as root), "
                "or set RABBITMQ_URL / CLINIC_TEST_RABBITMQ_URL to a running broker"
            )
        self.base = Path(base_dir).resolve()
        self.port = port or free_port()
        self.node = f"clinic{self.port}@localhost"
        self.process: subprocess.Popen | None = None
        self.epmd_port: int | None = None
        self.definitions = definitions

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _env(self) -> dict:
        env = dict(os.environ)
        env.update(
            HOME=str(self.base),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self._dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(self.base / "rabbitmq.pid"),
            # Where the Erlang VM writes its crash dump: in the node's own directory, not wherever it was started.
            ERL_CRASH_DUMP=str(self.base / "erl_crash.dump"),
            # The node, and rabbitmqctl looking for it, use (and start) the epmd on this port.
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            # The node's distribution port (and the one rabbitmqctl's own node opens) on the loopback only:
            # whoever reaches it with the Erlang cookie runs any code in the node.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=LOOPBACK_DISTRIBUTION,
            RABBITMQ_CTL_ERL_ARGS=LOOPBACK_DISTRIBUTION,
        )
        return env

    def start(self, timeout: float = 90) -> str:
        """Start the node and wait until it accepts connections; returns its AMQP URL."""
        process = self.launch()
        wait_for_port(self.port, timeout, process, f"RabbitMQ (log: {self.base / 'log'})")
        return self.url

    def launch(self) -> subprocess.Popen:
        """Start the node (in a session of its own) without waiting for it to accept connections."""
        for sub in ("mnesia", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        dist_file = self.base / "dist_port"
        if not dist_file.exists():
            dist_file.write_text(str(free_port()))
        self._dist_port = int(dist_file.read_text())
        if self.epmd_port is None:
            self.epmd_port = self._own_epmd_port()
        config = "loopback_users = none\ndisk_free_limit.absolute = 50MB\nlog.console = false\n"
        if self.definitions is not None:
            definitions = self.base / "definitions.json"
            write_atomically(definitions, json.dumps(self.definitions))
            config += f"load_definitions = {definitions}\n"
        (self.base / "rabbitmq.conf").write_text(config)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        log = open(self.base / "server.out", "ab")
        with log:
            self.process = subprocess.Popen(
                [str(RABBITMQ_SERVER)], env=self._env(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        return self.process

    def _own_epmd_port(self) -> int:
        """The port remembered under base_dir when it is free or our epmd still holds it (a run that
        was killed left it); otherwise a new free one, remembered."""
        epmd_file = self.base / "epmd_port"
        if epmd_file.exists():
            port = int(epmd_file.read_text())
            if port_is_free(port) or _epmd_listens(port):
                return port
        port = free_port()
        epmd_file.write_text(str(port))
        return port

    def ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run([str(RABBITMQCTL), "-n", self.node, *args], env=self._env(), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)

    def import_definitions(self, definitions: dict) -> None:
        """Add definitions to the running node (e.g. topic permissions on one namespace's exchange)."""
        path = self.base / f"import-{os.getpid()}-{time.monotonic_ns()}.json"
        write_atomically(path, json.dumps(definitions))
        try:
            self.ctl("import_definitions", str(path))
        finally:
            path.unlink(missing_ok=True)

    def stop_app(self) -> None:
        """Stop the broker but keep the node: every connection drops, the port closes."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        wait_for_port(self.port, 60, what="RabbitMQ")

    def stop(self) -> None:
        """Stop the node, then the epmd it started (only ours: it listens on the node's own port)."""
        stop_process_group(self.process, timeout=30)
        self.process = None
        if self.epmd_port is not None:
            stop_epmd(self.epmd_port)


def stop_epmd(port: int, timeout: float = 10) -> None:
    """Stop the Erlang port mapper listening on `port`, and wait until the port is closed."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run([str(EPMD), "-port", str(port), "-kill"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=timeout)
    deadline = time.monotonic() + timeout
    while accepts_connections(port) and time.monotonic() < deadline:
        time.sleep(0.1)


def port_is_free(port: int) -> bool:
    """Nothing listens on the port of 127.0.0.1 (we could bind it)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _epmd_listens(port: int) -> bool:
    """An Erlang port mapper (not some other server) answers on the port."""
    try:
        return subprocess.run([str(EPMD), "-port", str(port), "-names"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def accepts_connections(port: int) -> bool:
    """Something accepts TCP connections on the port of 127.0.0.1."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class LocalPostgres:
    """A PostgreSQL 15 cluster of our own. As root it runs as the postgres user (it refuses root)."""

    def __init__(self, base_dir: Path, port: int | None = None):
        self.bin = _postgres_bin_dir()
        self.base = Path(base_dir).resolve()
        self.data = self.base / "data"
        self.port = port or free_port()
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60) -> str:
        self.base.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            os.chmod(self.base, 0o755)
            for parent in self.base.parents:
                # The postgres user must be able to reach its directory.
                if parent == Path("/") or os.stat(parent).st_mode & 0o001:
                    break
                os.chmod(parent, os.stat(parent).st_mode | 0o011)
            shutil.chown(self.base, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        self._pg_ctl_start(timeout)
        return self.url

    def _pg_ctl_start(self, timeout: float = 60) -> None:
        options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.base / "server.log"),
                  "-w", "-t", str(int(timeout)), "start")

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self._pg_ctl_start()

    def _run(self, *command: str, check: bool = True) -> None:
        result = subprocess.run([*self._as_user, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if check and result.returncode != 0:
            raise ServerNotAvailable(f"{' '.join(command[:1])} failed: {result.stdout[-2000:]}")


def _postgres_bin_dir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    preferred = Path("/usr/lib/postgresql/15/bin")
    for path in ([preferred] if preferred.exists() else []) + candidates:
        if (path / "initdb").exists():
            return path
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise ServerNotAvailable(
        "PostgreSQL server is not installed: `apt-get install -y postgresql-15 postgresql-contrib` "
        "(make test does this as root), or set CLINIC_TEST_POSTGRES_URL to a running server"
    )


def stop_process_group(process: subprocess.Popen | None, timeout: float = 20) -> None:
    """Stop a server started in its own session (start_new_session=True) with all its children:
    SIGTERM for a clean shutdown, SIGKILL if it has not ended within `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass
