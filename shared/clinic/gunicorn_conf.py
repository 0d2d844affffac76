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
- no access log: the app logs each request itself, by route template, never the raw path or query.
"""

from __future__ import annotations

import os

from gunicorn import util
from gunicorn.http import errors
from gunicorn.workers.gthread import ThreadWorker

from clinic.http_edge import MAX_BODY_BYTES
from clinic.http_errors import error_bytes

bind = f"0.0.0.0:{os.environ.get('PORT') or '8000'}"
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
threads = int(os.environ.get("WEB_THREADS") or 4)
limit_request_line = 8190
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
