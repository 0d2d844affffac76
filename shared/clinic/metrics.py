"""What every clinic process tells Prometheus, defined once so every service names it the same way.

Web apps serve these at /metrics on their own port, and the gunicorn master on its metrics port
(CLINIC_METRICS_PORT); workers on their metrics port (clinic.ops). Labels never hold patient data: a
route template, an event type, a status. Each metric carries the service's name, so several services
in one process (the tests) stay apart.

Under gunicorn the worker processes write their values to files in PROMETHEUS_MULTIPROC_DIR
(prometheus_client's multiprocess mode, set up by clinic.gunicorn_conf before they fork) and whoever
answers /metrics adds up every process's files. The mode is chosen when prometheus_client is first
imported, so that variable must be set before then; outside gunicorn (a worker, the tests) each
process has its own default registry. A gauge says how its processes' values combine: the clinic's
are set by a service worker, one process, so the most recent value is the one to show.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder

_children: dict = {}


def labelled(metric, *values: str):
    """The metric's child for these label values, kept: looking a child up by its labels costs more
    than counting (a lock, a tuple, a dict), and the web counts every request and the consumer every
    message. The labels are bounded by design (route templates, event types), and so is this."""
    key = (metric, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


# --- the web ---------------------------------------------------------------------------------

REQUESTS = Counter(
    "clinic_http_requests", "HTTP requests answered, by route template, method and status.",
    ["service", "route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "clinic_http_request_duration_seconds", "Time to answer an HTTP request, by route template and method.",
    ["service", "route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DATABASE_UNAVAILABLE = Counter(
    "clinic_database_unavailable", "Requests answered 503 database_unavailable (the database was away or stalled).",
    ["service"],
)

# --- the consumer ----------------------------------------------------------------------------

CONSUMED = Counter("clinic_messages_consumed", "Messages taken from the service's queue, by event type.", ["service", "event_type"])
APPLIED = Counter("clinic_messages_applied", "Events applied (their handler committed), by event type.", ["service", "event_type"])
DUPLICATES = Counter("clinic_messages_duplicate", "Events skipped because the inbox had applied them already.", ["service", "event_type"])
RETRIED = Counter("clinic_messages_retried", "Events whose handler failed and that wait to be tried again.", ["service", "event_type"])
DEAD_LETTERED = Counter("clinic_messages_dead_lettered", "Messages put in the service's dead-letter queue.", ["service", "event_type"])
APPLY_LAG_SECONDS = Histogram(
    "clinic_event_apply_lag_seconds", "From an event's occurred_at to when this service applied it.",
    ["service", "event_type"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
UNROUTED_MESSAGES = Gauge("clinic_unrouted_messages", "Events waiting in the unrouted queue (no queue was bound to them).", ["service"],
                          multiprocess_mode="mostrecent")

# --- the relay -------------------------------------------------------------------------------

OUTBOX_BACKLOG = Gauge("clinic_outbox_backlog", "Outbox rows not yet published.", ["service"], multiprocess_mode="mostrecent")
OUTBOX_OLDEST_AGE_SECONDS = Gauge("clinic_outbox_oldest_unpublished_age_seconds",
                                  "Age of the oldest outbox row not yet published (0 when none).", ["service"],
                                  multiprocess_mode="mostrecent")
RELAY_PUBLISHED = Counter("clinic_relay_published", "Outbox events the broker confirmed.", ["service"])
# Of several processes' values, the newest confirm.
RELAY_LAST_PUBLISH = Gauge("clinic_relay_last_publish_timestamp_seconds",
                           "When the relay last saw a publish confirmed (Unix time).", ["service"], multiprocess_mode="max")


# --- serving them ----------------------------------------------------------------------------

MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """This process's metrics as Prometheus reads them (the format `accept` asks for, else the text
    format), and their content type. In gunicorn's multiprocess mode, those of every worker process
    of the server, added up: the same answer whichever process is asked."""
    if os.environ.get(MULTIPROCESS_DIRECTORY):
        # A registry per scrape, as prometheus_client asks: the collector reads the files as they are now.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type
