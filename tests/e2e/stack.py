"""The whole clinic as it is deployed, for the journey tests: each service's web app under gunicorn
(`clinic.gunicorn_conf`) and its worker (`<service>-worker`) as processes of their own, each service on
its own PostgreSQL database and its own broker account, and a real SMTP server the test reads.

    with clinic_stack(postgres, settings_for, tmp_path, env) as stack:
        stack.url("records")             # the records web app
        stack.sink.messages()            # every email the SMTP server accepted
        stack.kill_worker("records")     # SIGKILL, as a crash or an OOM kill would
        stack.start_worker("records")

Every process is stopped at the end (SIGTERM to its process group, SIGKILL after 20 s), whatever
happened; when the block fails, the tail of each process's log is printed.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clinic import bus
from clinic.config import SERVICES
from clinic.db import create_engine
from clinic.localservers import free_port, wait_for_port
from clinic.migrations import migrate
from clinic.testing import eventually
from clinic.testing.queues import queue_state
from tests.support.service_process import LOG_TAIL_LINES, ServiceProcess
from tests.support.smtp_sink import SmtpSink

BIN = Path(sys.executable).parent


class ClinicStack:
    def __init__(self, ports: dict[str, int], processes: dict[str, ServiceProcess], sink: SmtpSink, settings: dict):
        self.ports = ports
        self.processes = processes
        self.sink = sink
        # Each service's settings as the test sees them (its database, its account, the namespace).
        self.settings = settings

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def kill_worker(self, service: str) -> None:
        self.processes[f"{service}-worker"].kill()

    def start_worker(self, service: str) -> None:
        self.processes[f"{service}-worker"].start()

    def wait_until_consuming(self, service: str, timeout: float = 30) -> None:
        """Until the service's worker consumes its queue: before that, what is published waits there."""
        queue = self.settings[service].queue
        eventually(lambda: queue_state(self._observer, queue).consumers > 0, timeout=timeout, interval=0.2,
                   message=f"the {service} worker to consume {queue}")

    def bus_is_quiet(self) -> bool:
        """Every service's worker consumes its queue and nothing in them waits to be delivered (a message
        a worker holds unacknowledged is not counted: the broker only says so through its management API)."""
        return all(queue_state(self._observer, self.settings[service].queue) == (0, 1) for service in SERVICES)

    @property
    def _observer(self) -> str:
        # The operations account may look at every queue.
        return self.settings["records"].operator_rabbitmq_url

    def print_logs(self) -> None:
        for name, process in self.processes.items():
            print(f"----- {name} ({process.log_path}), last {LOG_TAIL_LINES} lines -----\n{process.tail()}", file=sys.stderr)


def _prepare(settings) -> None:
    """The service's tables and its queues (with their bindings) before any process starts, as `clinic
    migrate` and `make run` do: an event published before its consumer first runs waits in its queue."""
    module = importlib.import_module(f"{settings.service}.db")
    engine = create_engine(settings.database_url)
    migrate(engine, module.MIGRATIONS)
    engine.dispose()
    consumed = importlib.import_module(f"{settings.service}.worker").handlers(settings)
    if consumed:
        bus.declare_consumer(settings, consumed)


@contextmanager
def clinic_stack(postgres, settings_for, tmp_path: Path, env: dict) -> Iterator[ClinicStack]:
    """The four services and their workers, started with `env` (over os.environ) plus each service's
    DATABASE_URL, RABBITMQ_URL (its own account), the test's bus namespace and the SMTP sink's address."""
    urls = {service: postgres.create_database(service) for service in SERVICES}
    settings = {service: settings_for(service, urls[service]) for service in SERVICES}
    sink = SmtpSink()
    processes: dict[str, ServiceProcess] = {}
    ports = {service: free_port() for service in SERVICES}
    failed = False
    try:
        for service in SERVICES:
            _prepare(settings[service])
        sink.start()
        common = dict(os.environ, **env, CLINIC_BUS_NAMESPACE=settings["records"].bus_namespace,
                      CLINIC_OIDC_JWKS_URL=settings["records"].oidc_jwks_url,
                      SMTP_HOST="127.0.0.1", SMTP_PORT=str(sink.port),
                      # No metrics ports: eight processes cannot share the one the environment may name.
                      CLINIC_METRICS_PORT="")
        # One gunicorn worker with four threads per service, as `make run` has them: eight processes
        # share two cores here, and a second worker would add nothing the journey exercises.
        for service in SERVICES:
            own = dict(common, DATABASE_URL=urls[service], RABBITMQ_URL=settings[service].rabbitmq_url)
            processes[f"{service}-web"] = ServiceProcess(f"{service}-web", [
                str(BIN / "gunicorn"), "-c", "python:clinic.gunicorn_conf", "--bind", f"127.0.0.1:{ports[service]}",
                "--workers", "1", "--threads", "4", f"{service}.app:create_app()"], own, tmp_path / f"{service}-web.log")
            processes[f"{service}-worker"] = ServiceProcess(f"{service}-worker", [str(BIN / f"{service}-worker")], own,
                                                            tmp_path / f"{service}-worker.log")
        for process in processes.values():
            process.start()
        for service in SERVICES:
            wait_for_port(ports[service], 60, processes[f"{service}-web"].process, f"{service} web")
        stack = ClinicStack(ports, processes, sink, settings)
        for service in SERVICES:
            stack.wait_until_consuming(service, timeout=60)
        yield stack
    except BaseException:
        failed = True
        raise
    finally:
        codes = {name: process.stop() for name, process in processes.items()}
        sink.stop()
        if failed:
            for name, code in codes.items():
                print(f"{name} exited with {code}", file=sys.stderr)
            ClinicStack(ports, processes, sink, settings).print_logs()
        for url in urls.values():
            postgres.drop_database(url)
    unclean = {name: code for name, code in codes.items() if code != 0}
    assert not unclean, f"processes that did not stop cleanly on SIGTERM (exit codes): {unclean}"
