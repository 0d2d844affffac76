"""Settings, read from environment variables in this one place.

Every variable has a default that runs the clinic on one machine (SQLite files
under var/, a local RabbitMQ, a local mail sink). The README lists them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEVELOPMENT_SIGNING_KEY = "development-only-signing-key-do-not-use-in-production"


class ConfigurationError(RuntimeError):
    """The settings cannot run a service safely."""


# Only development and test accept the development defaults; production refuses them.
ENVIRONMENTS = ("development", "test", "production")


def read_environment(env) -> str:
    """CLINIC_ENV, exactly one of ENVIRONMENTS; unset means development (what `make run` needs).

    Anything else refuses to start rather than be read as "not production": a `Production`, `prod` or
    `production ` taken for development would accept tokens signed with the development key."""
    if "CLINIC_ENV" not in env:
        return "development"
    value = env["CLINIC_ENV"]
    if value not in ENVIRONMENTS:
        raise ConfigurationError(
            f"CLINIC_ENV must be exactly development, test or production (or unset, for development), got {value!r}: "
            "any other value would run on the development keys and defaults"
        )
    return value


def read_int(env, name: str, default: int) -> int:
    """An integer setting; a malformed value is a ConfigurationError naming the variable."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None


def read_float(env, name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    service: str
    database_url: str
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    environment: str = "development"
    bus_namespace: str = "clinic"
    jwt_signing_key: str = DEVELOPMENT_SIGNING_KEY
    jwt_issuer: str = "clinic"
    token_ttl_minutes: int = 12 * 60
    clinic_timezone: str = "America/New_York"
    prefetch: int = 32
    delivery_limit: int = 5
    relay_batch_size: int = 100
    relay_idle_seconds: float = 0.1
    broker_heartbeat_seconds: int = 30
    reconnect_max_seconds: float = 5.0
    database_timeout_seconds: int = 2
    # The longest any one database wait may take (a statement, a commit, a frozen server) before the
    # request answers 503 or the worker backs off; kept below the probes' timeouts.
    database_deadline_seconds: float = 5.0
    # How long a failed event waits before each retry; after the last it is dead-lettered.
    retry_delays_seconds: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0)
    # How long the consumer waits for more messages before applying a batch smaller than `prefetch`.
    batch_wait_seconds: float = 0.005
    # Events no queue is bound to are kept at most this many, and at most this long.
    unrouted_max_length: int = 10_000
    unrouted_ttl_seconds: int = 7 * 24 * 3600
    # Outbox events the relay may have published and not yet seen confirmed.
    relay_window: int = 1000
    # The worker's own HTTP port for /metrics and its liveness (/healthz); 0 serves none.
    metrics_port: int = 0
    # The address it listens on: every one by default (a container's port is reached from outside it);
    # make run sets 127.0.0.1, so that a laptop does not offer its workers' metrics to the network.
    metrics_host: str = "0.0.0.0"
    log_level: str = "INFO"

    @property
    def exchange(self) -> str:
        return f"{self.bus_namespace}.events"

    @property
    def unrouted_exchange(self) -> str:
        return f"{self.bus_namespace}.unrouted"

    @property
    def unrouted_queue(self) -> str:
        return f"{self.bus_namespace}.unrouted"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.bus_namespace}.dead"

    @property
    def queue(self) -> str:
        return f"{self.bus_namespace}.{self.service}"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dead"

    @property
    def timezone(self) -> ZoneInfo:
        """The clinic's local time zone (checked when the settings were read)."""
        return ZoneInfo(self.clinic_timezone)

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    def with_changes(self, **changes) -> Settings:
        return replace(self, **changes)

    def check_safe_to_run(self) -> None:
        """Refuse to run production on development defaults."""
        if self.is_production:
            if self.jwt_signing_key in ("", DEVELOPMENT_SIGNING_KEY) or len(self.jwt_signing_key) < 32:
                raise ConfigurationError(
                    "CLINIC_ENV=production needs CLINIC_JWT_SIGNING_KEY set to a secret of at least "
                    "32 characters; the development key is refused."
                )
            if self.database_url.startswith("sqlite"):
                raise ConfigurationError("CLINIC_ENV=production needs DATABASE_URL to point at PostgreSQL.")


def read_delays(env, name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """Comma-separated seconds, each positive (e.g. "1,5,30")."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        delays = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ConfigurationError(f"{name} must be comma-separated seconds such as 1,5,30, got {raw!r}") from None
    if not all(0 < delay <= 24 * 3600 for delay in delays):
        raise ConfigurationError(f"{name}: every delay must be above 0 and at most a day, got {raw!r}")
    return delays


def default_database_url(service: str, var_dir: Path | None = None) -> str:
    var_dir = var_dir or Path(os.environ.get("CLINIC_VAR_DIR", "var"))
    return f"sqlite:///{(var_dir / f'{service}.db').resolve()}"


def read_timezone(env, name: str, default: str) -> str:
    """An IANA time zone name, checked now so a typo fails at start-up rather than on the first booking."""
    value = env.get(name) or default
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"{name} must be an IANA time zone such as America/New_York, got {value!r}") from None
    return value


def load_settings(service: str, env: dict | None = None) -> Settings:
    """Settings for one service from the environment (os.environ unless given)."""
    env = os.environ if env is None else env
    return Settings(
        service=service,
        database_url=env.get("DATABASE_URL") or default_database_url(service),
        rabbitmq_url=env.get("RABBITMQ_URL") or Settings.rabbitmq_url,
        environment=read_environment(env),
        bus_namespace=env.get("CLINIC_BUS_NAMESPACE") or Settings.bus_namespace,
        jwt_signing_key=env.get("CLINIC_JWT_SIGNING_KEY") or DEVELOPMENT_SIGNING_KEY,
        token_ttl_minutes=read_int(env, "CLINIC_TOKEN_TTL_MINUTES", Settings.token_ttl_minutes),
        clinic_timezone=read_timezone(env, "CLINIC_TIMEZONE", Settings.clinic_timezone),
        prefetch=read_int(env, "CLINIC_PREFETCH", Settings.prefetch),
        delivery_limit=read_int(env, "CLINIC_DELIVERY_LIMIT", Settings.delivery_limit),
        relay_batch_size=read_int(env, "CLINIC_RELAY_BATCH_SIZE", Settings.relay_batch_size),
        relay_idle_seconds=read_float(env, "CLINIC_RELAY_IDLE_SECONDS", Settings.relay_idle_seconds),
        broker_heartbeat_seconds=read_int(env, "CLINIC_BROKER_HEARTBEAT_SECONDS", Settings.broker_heartbeat_seconds),
        reconnect_max_seconds=read_float(env, "CLINIC_RECONNECT_MAX_SECONDS", Settings.reconnect_max_seconds),
        database_timeout_seconds=read_int(env, "CLINIC_DATABASE_TIMEOUT_SECONDS", Settings.database_timeout_seconds),
        database_deadline_seconds=read_float(env, "CLINIC_DATABASE_DEADLINE_SECONDS", Settings.database_deadline_seconds),
        retry_delays_seconds=read_delays(env, "CLINIC_RETRY_DELAYS", Settings.retry_delays_seconds),
        batch_wait_seconds=read_float(env, "CLINIC_BATCH_WAIT_MS", Settings.batch_wait_seconds * 1000) / 1000,
        unrouted_max_length=read_int(env, "CLINIC_UNROUTED_MAX_LENGTH", Settings.unrouted_max_length),
        unrouted_ttl_seconds=read_int(env, "CLINIC_UNROUTED_TTL_SECONDS", Settings.unrouted_ttl_seconds),
        relay_window=read_int(env, "CLINIC_RELAY_WINDOW", Settings.relay_window),
        metrics_port=read_int(env, "CLINIC_METRICS_PORT", Settings.metrics_port),
        metrics_host=env.get("CLINIC_METRICS_HOST") or Settings.metrics_host,
        log_level=env.get("LOG_LEVEL") or Settings.log_level,
    )
