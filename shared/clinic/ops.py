"""The ops port, and what an operator asks of the clinic's outboxes from the command line.

The ops port is a small HTTP server in a thread of its own, apart from the threads that answer
requests and from the consumer, so that it answers while those are all busy or stuck:

  GET /metrics   the process's metrics (clinic.metrics.exposition); the gunicorn master's are every
                 web worker process's, added up
  GET /healthz   200 {"status": "ok"} while the process is alive; 503 naming what is stuck

It never touches the database or the broker: a liveness probe must not fail, and Kubernetes restart a
healthy pod, because a server it depends on is away or slow (readiness, /readyz on the app port, says
that). A service worker serves it on settings.metrics_port (clinic.worker), a gunicorn master on
CLINIC_METRICS_PORT (clinic.gunicorn_conf).

`clinic outbox status` (outbox_status) prints each service's unpublished events and the age of the
oldest one.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from clinic.config import ConfigurationError, load_settings
from clinic.http_errors import FIXED_ANSWER_HEADERS, error_body, error_bytes
from clinic.metrics import exposition

log = logging.getLogger(__name__)

JSON = "application/json"


class OpsServer:
    """/metrics and /healthz on host:port, answered from a thread of their own until stop().

    `stuck()` says what of the process is stuck or dead, {what: why}; empty while all is well. It
    must answer at once, from what the process knows (a loop's last beat), never by asking a server.
    The port is bound when the object is made, so a port in use fails at start-up, not later.
    """

    def __init__(self, port: int, stuck: Callable[[], dict[str, str]] = dict, host: str = "0.0.0.0", name: str = "ops"):
        self.stuck = stuck
        self._server = ThreadingHTTPServer((host, port), _OpsRequest)
        # One thread per connection, none of which may keep the process from exiting.
        self._server.daemon_threads = True
        self._server.ops = self
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) it listens on."""
        return self._server.server_address[:2]

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def forget_in_child(self) -> None:
        """In a process forked from this one (a gunicorn worker): close its copy of the listening socket,
        which it inherited but will never serve, so only the process that serves the port holds it."""
        self._server.socket.close()


class _OpsRequest(BaseHTTPRequestHandler):
    server_version = "clinic-ops"
    sys_version = ""
    # A client that connects and says nothing does not hold a thread for long.
    timeout = 10

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, content_type = exposition(self.headers.get("Accept"))
            self._send(200, body, content_type, send_body)
        elif path == "/healthz":
            status, body = self._health()
            self._send(status, json.dumps(body).encode(), JSON, send_body)
        else:
            self._send(404, error_bytes(404, "the ops port serves /metrics and /healthz"), JSON, send_body)

    def _health(self) -> tuple[int, dict]:
        try:
            stuck = self.server.ops.stuck()
        except Exception as exc:  # noqa: BLE001 - a health check that cannot tell is a failed one
            stuck = {"health check": f"could not tell ({type(exc).__name__})"}
        if not stuck:
            return 200, {"status": "ok"}
        return 503, error_body("stuck", "stuck: " + ", ".join(sorted(stuck)), stuck)

    def _send(self, status: int, body: bytes, content_type: str, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        # The headers of every answer of the app port: this port is reached by browsers too.
        for name, value in FIXED_ANSWER_HEADERS:
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # noqa: A002 - the name BaseHTTPRequestHandler gives it
        # Probes and scrapes come every few seconds: a line each would bury the log.
        pass


# --- clinic outbox status -------------------------------------------------------------------


def outbox_status(services: Sequence[str], env: dict | None = None, out: Callable[[str], object] = print) -> list[dict]:
    """Print, for each service, how many of its events wait in its outbox to be published and how old
    the oldest is; return the same as rows {service, unpublished, oldest_age_seconds, problem}.

    Settings come from the environment (env, else os.environ) as each service reads them. A
    DATABASE_URL names one service's database (in a container), so with it set, name one service. A
    database that cannot be read is reported on its line (by the error's class only: its text may
    quote a row) and the others are still shown."""
    # Imported here: the gunicorn master imports this module for its ops port, and has no business
    # with databases or the broker.
    import sqlalchemy as sa

    from clinic import outbox
    from clinic.db import create_engine, messaging_tables

    env = os.environ if env is None else env
    if env.get("DATABASE_URL") and len(services) > 1:
        raise ConfigurationError("DATABASE_URL names one service's database: name that service (clinic outbox status SERVICE)")
    table = messaging_tables(sa.MetaData())[0]
    rows = []
    for service in services:
        settings = load_settings(service, env)
        row = {"service": service, "unpublished": None, "oldest_age_seconds": None, "problem": _missing_database(settings.database_url)}
        if row["problem"] is None:
            engine = create_engine(settings.database_url, settings.database_timeout_seconds,
                                   deadline_seconds=settings.database_deadline_seconds)
            try:
                row["unpublished"], row["oldest_age_seconds"] = outbox.backlog(engine, table)
            except (sa.exc.DBAPIError, sa.exc.TimeoutError) as exc:
                # Away, or not migrated: the class tells which; its text may quote a row.
                row["problem"] = f"could not read its outbox ({type(getattr(exc, 'orig', None) or exc).__name__})"
            finally:
                engine.dispose()
        rows.append(row)
        out(_status_line(row))
    return rows


def _missing_database(url: str) -> str | None:
    # Opening a SQLite file that is not there would create an empty one.
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return "no database yet (clinic migrate makes it)"
    return None


def _status_line(row: dict) -> str:
    if row["problem"] is not None:
        return f"{row['service']}: {row['problem']}"
    if not row["unpublished"]:
        return f"{row['service']}: nothing unpublished"
    return f"{row['service']}: {row['unpublished']} unpublished, the oldest {_age(row['oldest_age_seconds'])} old"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
