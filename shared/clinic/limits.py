"""Rate limits: how often one staff member, one client address and one bedside monitor may call a
service, and how often one staff member may search for patients.

Counted (clinic.config names each limit's setting and default):
- per client address (hold_address), every request that carries no valid token: a refused token or
  none (counted when the token is refused, so a token is always checked first), a device token
  its service does not know, and a request for an operation that checks no token (a path no route
  matches, the API documents). Never the probes (/healthz, /readyz; /metrics is answered before
  Flask). A request with a valid staff or device token is counted by its subject or device instead:
  a flood of made-up tokens from one machine, or a desk behind the same address trying tokens, is
  refused 429 once past the limit, while the staff and the monitors behind that address go on. The
  address is the connection's, or, behind CLINIC_TRUSTED_PROXIES reverse proxies, the one the
  outermost of them saw (X-Forwarded-For read from the right, so a client cannot name itself);
- per staff member: the subject of a token whose signature, issuer, audience and lifetime were
  checked (the edge, clinic.http_edge, calls hold_subject once they were), never a claim read from
  an unchecked token, so nobody can spend another's allowance;
- per bedside monitor (hold_device): keyed by its device token's hash, the key the device is stored
  under. A monitor posting in a loop is refused while the others' posts go through; a made-up token
  has an allowance of its own, but is refused 401 and so counted by its address;
- per staff member for the patient search (hold_patient_search), tighter, since enumerating
  patients is what it guards against.

A refusal is a 429 in the shared error shape with Retry-After (whole seconds). The moving window
counts each hit for exactly the window after it (no double burst at a window's edge) and costs a few
microseconds a request in memory. The counts are the limits library's (Flask-Limiter's own), called
directly: each is taken where the caller is known, so no route limit is needed. They are kept in
memory (one process's own) unless CLINIC_RATE_LIMIT_STORAGE_URL names a shared store (Redis), which
replicas need to share one allowance. When that store fails or does not answer within STORE_TIMEOUT_SECONDS, each process
counts in its own memory rather than refuse or wave through every request, and asks the store again
only after a growing delay (clinic.outages): a hung store costs one request one timeout now and then,
not every request one timeout per limit. The outage is logged once when it begins and once when it ends.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from flask import Flask, current_app, request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import STRATEGIES, RateLimiter

from clinic.config import ConfigurationError, Settings
from clinic.errors import ClinicError, Unauthorized
from clinic.http_errors import error_response
from clinic.outages import Backoff, Outage

log = logging.getLogger(__name__)

STRATEGY = "moving-window"
# How long a request waits on the shared store before it counts in memory instead.
STORE_TIMEOUT_SECONDS = 0.5
# After the store failed, it is asked again after a delay growing from the first to the cap (with jitter).
STORE_FIRST_RETRY_SECONDS = 2.0
STORE_RETRY_CAP_SECONDS = 30.0
# For tools that load a service to measure it (benchmarks, the OpenAPI fuzzer), not its limits: one
# caller from one address, far past any staff member's allowance. By settings name (for an app built in
# the process), and as the environment variables clinic.config reads (for a service started as a process).
LOAD_TEST_LIMITS = {"rate_limit_per_subject": "1000000/minute", "rate_limit_per_address": "1000000/minute",
                    "rate_limit_per_device": "1000000/minute", "rate_limit_patient_search": "1000000/minute"}
LOAD_TEST_LIMITS_ENV = {f"CLINIC_{name.upper()}": value for name, value in LOAD_TEST_LIMITS.items()}


class RateLimited(ClinicError):
    """Too many requests from one caller: answered 429 with Retry-After."""

    http_status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int, details: dict | None = None):
        super().__init__(message, {**(details or {}), "retry_after_seconds": retry_after})
        self.retry_after = retry_after


def parsed(limit: str) -> tuple[RateLimitItem, ...]:
    """A limit in the limits library's notation ("30/minute;300/hour"); ValueError when malformed."""
    return tuple(parse_many(limit))


def _setting(settings: Settings, name: str) -> tuple[RateLimitItem, ...]:
    # clinic.config checked what it read; this catches settings changed in code (with_changes).
    try:
        return parsed(getattr(settings, name))
    except ValueError:
        raise ConfigurationError(f"CLINIC_{name.upper()} is not a rate limit: {getattr(settings, name)!r}") from None


class _InlineExpiryMemory(MemoryStorage):
    """limits' in-memory storage, its clean-up of past hits run by the caller at most once a second.

    MemoryStorage starts a new timer thread 10 ms after any hit to drop expired hits, so on a busy
    service a request starts (and waits for) a thread every 10 ms or so: measured in the booking
    benchmark as the largest part of what the limits cost. The counts never depend on that clean-up
    (each check compares the hits' own times), so doing it inline, once a second, changes no answer.
    The method overridden is MemoryStorage's private one (limits is pinned in constraints.txt)."""

    def __init__(self):
        super().__init__()
        self._cleaned_at = time.monotonic()
        self._cleaning = threading.Lock()

    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at < 1.0 or not self._cleaning.acquire(blocking=False):
            return
        try:
            self._cleaned_at = now
            self._MemoryStorage__expire_events()
        finally:
            self._cleaning.release()


class _Limits:
    """One app's parsed limits and where they are counted: the shared store, or this process's memory
    (always, for a memory:// store; meanwhile, while the shared store is away)."""

    def __init__(self, settings: Settings, clock=time.monotonic):
        # Sorted once, shortest window first: a caller past a minute's allowance is refused before
        # spending an hour's.
        self.per_address = tuple(sorted(_setting(settings, "rate_limit_per_address")))
        self.per_subject = tuple(sorted(_setting(settings, "rate_limit_per_subject")))
        self.per_device = tuple(sorted(_setting(settings, "rate_limit_per_device")))
        self.patient_search = tuple(sorted(_setting(settings, "rate_limit_patient_search")))
        self.prefix = f"clinic:{settings.service}"
        self._memory = STRATEGIES[STRATEGY](_InlineExpiryMemory())
        self._shared: RateLimiter | None = None
        if not settings.rate_limit_storage_url.startswith("memory://"):
            # Connects on first use: a store away at start is an outage like any other, not a refusal to start.
            storage = storage_from_string(settings.rate_limit_storage_url, socket_timeout=STORE_TIMEOUT_SECONDS,
                                          socket_connect_timeout=STORE_TIMEOUT_SECONDS)
            self._shared = STRATEGIES[STRATEGY](storage)
        self._clock = clock
        self._retry_at = 0.0  # clock() from which the shared store is asked again
        self._backoff = Backoff(STORE_RETRY_CAP_SECONDS, STORE_FIRST_RETRY_SECONDS)
        self._outage = Outage(log, "the rate limit store (counts kept in memory meanwhile)")
        self._state = threading.Lock()

    def _hit(self, item: RateLimitItem, keys: tuple) -> tuple[bool, RateLimiter]:
        """Count one hit: in the shared store unless it is away, else in memory."""
        shared = self._shared
        if shared is not None and self._store_worth_asking():
            try:
                allowed = shared.hit(item, *keys)
            except Exception as exc:  # noqa: BLE001 - any failure of the store: count in memory meanwhile
                with self._state:
                    delay = self._backoff.next()
                    self._retry_at = self._clock() + delay
                    self._outage.failed(exc, delay)
            else:
                if self._outage.since is not None:
                    with self._state:
                        self._backoff.reset()
                        self._outage.recovered()
                return allowed, shared
        return self._memory.hit(item, *keys), self._memory

    def _store_worth_asking(self) -> bool:
        if self._outage.since is None:
            return True
        with self._state:
            now = self._clock()
            if now < self._retry_at:
                return False
            # One request asks whether the store is back; the others count in memory meanwhile.
            self._retry_at = now + 2 * STORE_TIMEOUT_SECONDS
            return True

    def hold(self, kind: str, limits: tuple[RateLimitItem, ...], identity: str) -> None:
        keys = (self.prefix, kind, identity)
        for item in limits:
            allowed, strategy = self._hit(item, keys)
            if not allowed:
                try:
                    reset_at = strategy.get_window_stats(item, *keys).reset_time
                except Exception:  # noqa: BLE001 - the store went away since the hit: a minute is a fair guess
                    reset_at = time.time() + 60
                # Debug only: the edge's line for the request already says 429, once.
                log.debug("rate limit %s exceeded (%s)", item, kind)
                raise RateLimited(f"too many requests: at most {item} {_PER[kind]}; try again later",
                                  _seconds_until(reset_at), {"limit": str(item), "per": kind})


_PER = {"subject": "per staff member", "device": "per monitor", "patient_search": "patient searches per staff member",
        "address": "per client address"}


def _seconds_until(moment: float) -> int:
    return max(1, math.ceil(moment - time.time()))


def install(app: Flask, settings: Settings) -> None:
    """Ready `app`'s limits: per address (clinic.http_edge, and a refused token here), per subject and
    per device (clinic.http_edge, when it admits the caller) and for the patient search (the view)."""
    app.extensions["clinic.limits"] = _Limits(settings)
    app.register_error_handler(RateLimited, response_for)
    # More specific than clinic.web's handler of every ClinicError: each refused token is counted.
    app.register_error_handler(Unauthorized, _unauthenticated)


def client_address() -> str:
    """The caller's address: the connection's, or behind CLINIC_TRUSTED_PROXIES proxies the address
    the outermost trusted one saw. Entries further left were written by the client and are ignored."""
    proxies = current_app.config["CLINIC_SETTINGS"].trusted_proxies
    if proxies:
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",")]
        if len(forwarded) >= proxies and forwarded[-proxies]:
            return forwarded[-proxies]
    return request.remote_addr or "unknown"


def _unauthenticated(exc: Unauthorized):
    """A 401, or a 429 once the address has had more refused tokens than its allowance."""
    try:
        hold_address()
    except RateLimited as refusal:
        return response_for(refusal)
    return error_response(exc.http_status, exc.code, exc.message, exc.details)


def response_for(refusal: RateLimited):
    """The 429 answer: the shared error shape and Retry-After."""
    response = error_response(refusal.http_status, refusal.code, refusal.message, refusal.details)
    response.headers["Retry-After"] = str(refusal.retry_after)
    return response


def _current() -> _Limits:
    return current_app.extensions["clinic.limits"]


def hold_address() -> None:
    """Count a request from the caller's address that carries no valid token; RateLimited past the
    limit. Called once per request: by the edge for an operation that checks no token (never for the
    probes, clinic.http_edge.PROBE_ROUTES), or when a token is refused (each request is refused at most once)."""
    limits = _current()
    limits.hold("address", limits.per_address, client_address())


def hold_subject(subject: str) -> None:
    """Count a request of the staff member whose token was just verified; RateLimited past the limit.
    Called once per request, by the edge (clinic.http_edge) when it admits the caller."""
    limits = _current()
    limits.hold("subject", limits.per_subject, subject)


def hold_device(device_token_hash: str) -> None:
    """Count a bedside monitor's post, keyed by its token's hash; RateLimited past the limit.
    Called once per request, by the edge (clinic.http_edge) when it admits the caller, before the
    body is read."""
    limits = _current()
    limits.hold("device", limits.per_device, device_token_hash)


def hold_patient_search(subject: str) -> None:
    """Count one patient search by this staff member; RateLimited past the limit."""
    limits = _current()
    limits.hold("patient_search", limits.patient_search, subject)
