"""Rate limits: how often one staff member, one client address and one bedside monitor may call a
service, and how often one staff member may search for patients.

Counted (clinic.config names each limit's setting and default):
- per client address (hold_address), every request that carries no valid token: a refused token or
  none (counted when clinic.auth refuses it, so a token is always checked first), a device token
  its service does not know, and a request for an operation that checks no token (a path no route
  matches, the API documents). Never the probes (/healthz, /readyz; /metrics is answered before
  Flask). A request with a valid staff or device token is counted by its subject or device instead:
  a flood of made-up tokens from one machine, or a desk behind the same address trying tokens, is
  refused 429 once past the limit, while the staff and the monitors behind that address go on. The
  address is the connection's, or, behind CLINIC_TRUSTED_PROXIES reverse proxies, the one the
  outermost of them saw (X-Forwarded-For read from the right, so a client cannot name itself);
- per staff member: the subject of a token whose signature, issuer, audience and lifetime were
  checked (clinic.auth.authenticate calls hold_subject), never a claim read from an unchecked token,
  so nobody can spend another's allowance;
- per bedside monitor (hold_device): keyed by its device token's hash, the key the device is stored
  under. A monitor posting in a loop is refused while the others' posts go through; a made-up token
  has an allowance of its own, but is refused 401 and so counted by its address;
- per staff member for the patient search (hold_patient_search), tighter, since enumerating
  patients is what it guards against.

A refusal is a 429 in the shared error shape with Retry-After (whole seconds): never Flask-Limiter's
HTML. The moving window counts each hit for exactly the window after it (no double burst at a window's
edge) and costs a few microseconds a request in memory. Counts are kept in memory (one process's
own) unless CLINIC_RATE_LIMIT_STORAGE_URL names a shared store (Redis), which replicas need to share
one allowance; when that store cannot be reached, each process counts in its own memory meanwhile
rather than refuse or wave through every request.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from flask import Flask, current_app, g, request
from flask_limiter import Limiter
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import STRATEGIES, RateLimiter

from clinic.config import ConfigurationError, Settings
from clinic.errors import ClinicError, Unauthorized

log = logging.getLogger(__name__)

STRATEGY = "moving-window"
# Probes are never limited: a busy clinic must not look dead to its orchestrator.
UNLIMITED_ROUTES = frozenset({"/healthz", "/readyz"})
# How long a request waits on the shared store before it counts in memory instead.
STORE_TIMEOUT_SECONDS = 0.5
# For tools that load a service to measure it (benchmarks, the OpenAPI fuzzer), not its limits: one
# caller from one address, far past any staff member's allowance. Settings names; as environment
# variables, CLINIC_ and the name in capitals.
LOAD_TEST_LIMITS = {"rate_limit_per_subject": "1000000/minute", "rate_limit_per_address": "1000000/minute",
                    "rate_limit_per_device": "1000000/minute", "rate_limit_patient_search": "1000000/minute"}


class RateLimited(ClinicError):
    """Too many requests from one caller: answered 429 with Retry-After."""

    http_status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int, details: dict | None = None):
        super().__init__(message, {**(details or {}), "retry_after_seconds": retry_after})
        self.retry_after = retry_after


def parsed(limit: str) -> tuple[RateLimitItem, ...]:
    """A limit in Flask-Limiter's notation ("30/minute;300/hour"); ValueError when malformed."""
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
    """One app's limiter and its parsed limits."""

    def __init__(self, limiter: Limiter, settings: Settings):
        self.limiter = limiter
        self.per_address = _setting(settings, "rate_limit_per_address")
        self.per_subject = _setting(settings, "rate_limit_per_subject")
        self.per_device = _setting(settings, "rate_limit_per_device")
        self.patient_search = _setting(settings, "rate_limit_patient_search")
        self.prefix = f"clinic:{settings.service}"
        self._fallback = STRATEGIES[STRATEGY](_InlineExpiryMemory())
        self._in_memory = settings.rate_limit_storage_url.startswith("memory://")

    def _strategy(self) -> RateLimiter:
        if self._in_memory:
            return self._fallback
        # Flask-Limiter's own: the shared store, or its in-memory fallback while it finds the store away.
        return self.limiter.limiter

    def hold(self, kind: str, limits: tuple[RateLimitItem, ...], identity: str) -> None:
        for item in sorted(limits):
            keys = (self.prefix, kind, identity)
            try:
                strategy = self._strategy()
                allowed = strategy.hit(item, *keys)
            except Exception as exc:  # the shared store is away: count in this process meanwhile
                log.warning("the rate limit store is not reachable (%s); counting in memory", type(exc).__name__)
                strategy = self._fallback
                allowed = strategy.hit(item, *keys)
            if not allowed:
                reset_at = strategy.get_window_stats(item, *keys).reset_time
                log.info("rate limit %s exceeded (%s)", item, kind)
                raise RateLimited(f"too many requests: at most {item} {_PER[kind]}; try again later",
                                  _seconds_until(reset_at), {"limit": str(item), "per": kind})


_PER = {"subject": "per staff member", "device": "per monitor", "patient_search": "patient searches per staff member",
        "address": "per client address"}


def _seconds_until(moment: float) -> int:
    return max(1, math.ceil(moment - time.time()))


def install(app: Flask, settings: Settings) -> None:
    """Ready `app`'s limits: per address (clinic.http_edge, and a refused token here), per subject
    (clinic.auth), per device and for the patient search (the views). Flask-Limiter keeps the counts
    (the shared store, and memory meanwhile when it is away); it limits no route by itself."""
    storage_options = {} if settings.rate_limit_storage_url.startswith("memory://") else {
        "socket_timeout": STORE_TIMEOUT_SECONDS, "socket_connect_timeout": STORE_TIMEOUT_SECONDS}
    limiter = Limiter(
        key_func=client_address,
        app=app,
        strategy=STRATEGY,
        storage_uri=settings.rate_limit_storage_url,
        storage_options=storage_options,
        in_memory_fallback_enabled=True,
        key_prefix=f"clinic:{settings.service}",
        headers_enabled=False,
    )
    # Flask-Limiter checks every request against route limits before the view; there are none (each
    # count is taken where the caller is known), so that check, a cost on every request, is taken out.
    app.before_request_funcs[None].remove(limiter._check_request_limit)
    app.extensions["clinic.limits"] = _Limits(limiter, settings)
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
    from clinic.http_errors import error_response

    try:
        hold_address()
    except RateLimited as refusal:
        return response_for(refusal)
    return error_response(exc.http_status, exc.code, exc.message, exc.details)


def response_for(refusal: RateLimited):
    """The 429 answer: the shared error shape and Retry-After."""
    from clinic.http_errors import error_response

    response = error_response(refusal.http_status, refusal.code, refusal.message, refusal.details)
    response.headers["Retry-After"] = str(refusal.retry_after)
    return response


def _current() -> _Limits:
    return current_app.extensions["clinic.limits"]


def hold_address() -> None:
    """Count a request from the caller's address that carries no valid token; RateLimited past the
    limit. Counted once per request; never for the probes."""
    if g.get("clinic_address_counted") or (request.url_rule is not None and request.url_rule.rule in UNLIMITED_ROUTES):
        return
    g.clinic_address_counted = True
    limits = _current()
    limits.hold("address", limits.per_address, client_address())


def hold_subject(subject: str) -> None:
    """Count a request of the staff member whose token was just verified; RateLimited past the limit.
    Counted once per request, however many times the request is authenticated."""
    if g.get("clinic_subject_counted"):
        return
    g.clinic_subject_counted = True
    limits = _current()
    limits.hold("subject", limits.per_subject, subject)


def hold_device(device_token_hash: str) -> None:
    """Count a bedside monitor's post, keyed by its token's hash; RateLimited past the limit.
    Counted once per request (the edge holds it before the body is read, the view may again)."""
    if g.get("clinic_device_counted"):
        return
    g.clinic_device_counted = True
    limits = _current()
    limits.hold("device", limits.per_device, device_token_hash)


def hold_patient_search(subject: str) -> None:
    """Count one patient search by this staff member; RateLimited past the limit."""
    limits = _current()
    limits.hold("patient_search", limits.patient_search, subject)
