"""gunicorn's settings for every clinic web process, wherever it runs:

    gunicorn -c python:clinic.gunicorn_conf '<service>.app:create_app()'

(the container's default command, `make run`, the benchmark and the end-to-end test all use it;
options given on the command line win, e.g. run_local's --bind 127.0.0.1:8103).

Environment: PORT (8000) for the address, WEB_CONCURRENCY (2) worker processes, WEB_THREADS (4)
threads each. What it adds to gunicorn's defaults, and why:

- the refusals gunicorn makes before the app sees a request (a request line or headers too long, a
  malformed request) are answered in the services' JSON error shape, not an HTML page, and are
  logged without the request line (which can hold a name in a query string);
- the request line may be as long as gunicorn allows (8190), above the app's own limit
  (clinic.http_edge.MAX_TARGET_LENGTH), so a long URL is normally answered by the app;
- a request whose body is over the app's limit, or of unknown length (chunked), is answered with
  `Connection: close` and the connection closed: the app answers 413 without reading such a body,
  and gunicorn would otherwise give up draining it after 64 KiB and drop a connection it had just
  announced as kept alive (the client's next request on it then fails);
- on SIGTERM the master stops taking connections and gives the requests in hand up to
  graceful_timeout (20 s) to be answered before it kills a worker: under the 30 s that compose
  (stop_grace_period) and Kubernetes (terminationGracePeriodSeconds) allow before their SIGKILL,
  with room for the worker processes and the master to exit;
- no access log: the app logs each request itself, by route template, never the raw path or query;
- the settings are checked in the master before any worker forks (the service is the app's package,
  `scheduling` in `scheduling.app:create_app()`, else SERVICE): settings production refuses
  (Settings.check_safe_to_run) stop gunicorn with one line naming the setting, instead of each worker
  failing to boot with its traceback;
- metrics added up over the worker processes: the master gives them a fresh directory for
  prometheus_client's multiprocess mode before they fork (PROMETHEUS_MULTIPROC_DIR; removed when
  the master exits), so /metrics answers the same whichever process is asked;
- with CLINIC_METRICS_PORT set, the master itself serves /metrics and /healthz on that port, on the
  address the app listens on (clinic.ops), from a thread of its own: the liveness probe is answered
  while every request thread waits on a stalled database.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from gunicorn import util
from gunicorn.http import errors
from gunicorn.workers.gthread import ThreadWorker

from clinic.config import read_int
from clinic.http_edge import MAX_BODY_BYTES
from clinic.http_errors import error_bytes

bind = f"0.0.0.0:{os.environ.get('PORT') or '8000'}"
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
threads = int(os.environ.get("WEB_THREADS") or 4)
limit_request_line = 8190
# Below the 30 s grace period of compose and Kubernetes (see above); gunicorn's default is 30.
graceful_timeout = 20
accesslog = None
# Worker heartbeat files on tmpfs where there is one (a container's root filesystem may be read-only).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None


def pre_request(worker, req):
    """Before the app: close after answering when the body cannot be drained cheaply (see above)."""
    for name, value in req.headers:
        if name == "CONTENT-LENGTH" and value.strip().isdigit() and int(value) > MAX_BODY_BYTES:
            req.force_close()
        elif name == "TRANSFER-ENCODING" and "chunked" in value.lower():
            req.force_close()


# (status, reason, message) for what gunicorn refuses itself, most specific first; anything else
# (a fault of the app or of the server) keeps gunicorn's own answer.
_REFUSALS = (
    ((errors.InvalidResponseHeader, errors.InvalidResponseHeaderName, errors.ConfigurationProblem,
      errors.ForbiddenProxyRequest), None),
    ((errors.LimitRequestLine,), (414, "URI Too Long", "the request line is too long: shorten the path or query")),
    ((errors.LimitRequestHeaders,), (431, "Request Header Fields Too Large", "too many request headers, or one too long")),
    ((errors.ExpectationFailed,), (417, "Expectation Failed", "only Expect: 100-continue is understood")),
    ((errors.UnsupportedTransferCoding,), (501, "Not Implemented", "that transfer coding is not supported")),
    ((errors.ParseException,), (400, "Bad Request", "not a well-formed HTTP request")),
)


def _refusal(exc):
    for kinds, refusal in _REFUSALS:
        if isinstance(exc, kinds):
            return refusal
    return None


class JsonErrorsThreadWorker(ThreadWorker):
    """gunicorn's threaded worker, answering the requests it refuses itself in the JSON error shape."""

    def handle_error(self, req, client, addr, exc):
        refusal = _refusal(exc)
        if refusal is None:
            return super().handle_error(req, client, addr, exc)
        status, reason, message = refusal
        # The exception's text can quote the request line; its kind is enough to tell what happened.
        self.log.warning("refused a request before the app: %s %s", status, type(exc).__name__)
        body = error_bytes(status, message)
        head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
        try:
            util.write_nonblock(client, head + body)
        except OSError:
            self.log.debug("could not send the refusal")
        return None


worker_class = JsonErrorsThreadWorker


# --- metrics and the master's ops port ---------------------------------------------------------
# Nothing here may import prometheus_client before on_starting has set the directory: it chooses
# between one process's values and files shared by several when it is first imported.

_MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"  # clinic.metrics.MULTIPROCESS_DIRECTORY
_metrics_directory: str | None = None
_ops = None  # the master's clinic.ops.OpsServer
_settings = None  # the master's settings, read and checked once in on_starting


def on_starting(server):
    """In the master, before any worker forks: the settings checked, and a fresh directory for the
    workers' metrics."""
    global _metrics_directory, _settings
    _settings = _refuse_unsafe_settings(server)
    values = sys.modules.get("prometheus_client.values")
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        # Imported before the master started (the app preloaded): the workers would keep their
        # values to themselves, and files in the directory would be empty. Better per-process than wrong.
        server.log.warning("metrics are per worker process: prometheus_client was imported before gunicorn started")
        return
    _metrics_directory = tempfile.mkdtemp(prefix="clinic-metrics-")
    os.environ[_MULTIPROCESS_DIRECTORY] = _metrics_directory


def when_ready(server):
    """The master's ops port, when CLINIC_METRICS_PORT is set: /metrics of every worker process, and
    /healthz answering while the master runs."""
    global _ops
    _warn_when_development_tokens_are_reachable(server, _settings)
    port = read_int(os.environ, "CLINIC_METRICS_PORT", 0)
    if port <= 0:
        return
    from clinic.ops import OpsServer

    host = _ops_host(server.cfg.address)
    try:
        _ops = OpsServer(port, host=host, name="gunicorn-ops").start()
    except OSError as exc:
        # Without it the liveness probe fails and the pod restarts in a loop: say why, and stop now.
        server.halt(f"CLINIC_METRICS_PORT {host}:{port} cannot be served ({exc.strerror})", exit_status=1)
    server.log.info("/metrics and /healthz of the web master on %s:%s", host, port)


def _ops_host(addresses) -> str:
    # The app's own address when it listens on the loopback only (make run, tests), else every address.
    return "127.0.0.1" if _loopback_only(addresses) else "0.0.0.0"


def _loopback_only(addresses) -> bool:
    hosts = [address[0] for address in addresses if isinstance(address, tuple)]
    return bool(hosts) and all(host in ("127.0.0.1", "localhost", "::1") for host in hosts)


def _service(server) -> str:
    """The service gunicorn serves: the package of its app (`sessions.app:create_app()`), else SERVICE."""
    uri = getattr(getattr(server, "app", None), "app_uri", None) or getattr(server.cfg, "wsgi_app", None) or ""
    return uri.partition(":")[0].partition(".")[0] or os.environ.get("SERVICE") or "web"


def _refuse_unsafe_settings(server):
    """The service's settings; the master stopped, with one line, on settings every worker would
    refuse (clinic.config)."""
    from clinic.config import ConfigurationError, load_settings

    try:
        settings = load_settings(_service(server))
        settings.check_safe_to_run()
    except ConfigurationError as exc:
        server.log.error("refusing to start: %s", exc)
        sys.exit(1)
    return settings


def _warn_when_development_tokens_are_reachable(server, settings) -> None:
    """Once, in the master: a development service that other machines can reach accepts the tokens
    anyone who can read its development private key can sign (`clinic token`, with the key pair in
    the var dir's identity folder). make run binds 127.0.0.1; the images set production."""
    if settings is None:
        return  # on_starting has refused to start, and said why
    if settings.accepts_development_tokens and not _loopback_only(server.cfg.address):
        server.log.warning(
            "CLINIC_ENV=%s and listening beyond this machine (%s): this service accepts development tokens, "
            "which anyone who can read the development private key (development-signing-key.pem, beside the JWKS "
            "file CLINIC_OIDC_JWKS_URL names) can sign. Bind 127.0.0.1, or set CLINIC_ENV=production with the "
            "identity provider's CLINIC_OIDC_* settings.", settings.environment,
            ", ".join(str(address) for address in server.cfg.address))


def post_fork(server, worker):
    """In each new worker: let go of the master's ops port, which only the master serves."""
    if _ops is not None:
        _ops.forget_in_child()


def child_exit(server, worker):
    """In the master, when a worker process ends: its counts stay, its live gauges go."""
    if _metrics_directory is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, _metrics_directory)


def on_exit(server):
    if _ops is not None:
        _ops.stop()
    if _metrics_directory is not None:
        shutil.rmtree(_metrics_directory, ignore_errors=True)
