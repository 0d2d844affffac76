"""Settings, read from environment variables in this one place.

Every variable has a default that runs the clinic on one machine (SQLite files
under var/, a local RabbitMQ, a local mail sink). The README lists them all.
Past 400 lines: every setting and its reader live here, so that no other module reads the environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# The issuer of development tokens (`clinic token`); production refuses it.
DEVELOPMENT_ISSUER = "http://127.0.0.1/clinic-development"
# Broker and database credentials that come with a server or with our own defaults: production refuses them.
DEFAULT_PASSWORDS = ("", "guest", "postgres", "clinic", "password")
# Every password and secret in deploy/clinic.env.example starts with this: production refuses a value
# copied from the example file unchanged.
EXAMPLE_MARKER = "example-"


# Each service publishes its own prefix with a broker account of its own (README, "Broker accounts").
DEFAULT_BROKER_PUBLISHERS = (("records", "clinic-records"), ("scheduling", "clinic-scheduling"),
                             ("sessions", "clinic-sessions"), ("notifications", "clinic-notifications"))
# The operations account that may re-publish a message as its original publisher (replays).
OPERATOR_ACCOUNT = "clinic-operator"
# The clinic's four services, in the order `make run` gives them ports (web_port).
SERVICES = ("scheduling", "sessions", "records", "notifications")


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
    # With an amqps:// URL the broker's certificate is verified (host name included) against this CA
    # bundle, for a broker whose certificate a private authority signed; empty: the system's CAs.
    rabbitmq_ca_file: str = ""
    # Which broker account owns (alone may publish) each event prefix: a consumer refuses an event whose
    # publisher (the AMQP user_id the broker checked) is not its prefix's owner. (prefix, account) pairs.
    broker_publishers: tuple[tuple[str, str], ...] = DEFAULT_BROKER_PUBLISHERS
    # The operations account (tagged impersonator) the `clinic` command replays messages with, keeping
    # their publisher; empty: the command uses rabbitmq_url, and the broker refuses a replay.
    operator_rabbitmq_url: str = ""
    # The login role the service's web and worker connect as (PostgreSQL): `clinic migrate`, run as the
    # database's owner, grants it what the service needs and no more. Empty: nothing is granted.
    database_service_role: str = ""
    # How long `clinic migrate` waits for its database and broker to answer: compose may start it first.
    migrate_wait_seconds: float = 120.0
    environment: str = "development"
    bus_namespace: str = "clinic"
    # Staff tokens (clinic.auth, clinic.identity): who issues them, for which service, the issuer's public
    # keys (https:// from the provider; file:// the development pair's JWKS), where the roles are.
    oidc_issuer: str = DEVELOPMENT_ISSUER
    oidc_audience: str = ""  # load_settings: clinic-<service>
    oidc_jwks_url: str = ""  # load_settings: the development JWKS file under the var directory
    oidc_roles_claim: str = "realm_access.roles"
    token_max_lifetime_minutes: int = 12 * 60
    token_clock_skew_seconds: int = 30
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
    # Rate limits in the limits library's notation (clinic.limits; the README's table says why these).
    rate_limit_per_subject: str = "600/minute"
    rate_limit_per_address: str = "1200/minute"
    rate_limit_per_device: str = "120/minute"
    rate_limit_patient_search: str = "30/minute;300/hour"
    # Where the counts are kept: memory:// counts per process; replicas share redis://host:6379/0.
    rate_limit_storage_url: str = "memory://"
    # Reverse proxies in front of the service whose X-Forwarded-For is believed (0: none, the default).
    trusted_proxies: int = 0
    # /docs and /openapi.json: on in development and test, off in production unless CLINIC_API_DOCS=on.
    api_docs: bool = True

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
        """Refuse to run production on development defaults, naming the setting and why. Development and
        test accept them all, so that `make run` needs no setting. (Notifications refuses plain SMTP to
        another machine in its own mail settings.)"""
        if not self.is_production:
            return
        # Compared loosely: a trailing slash or capitals still name the development issuer.
        if self.oidc_issuer.strip().rstrip("/").lower() == DEVELOPMENT_ISSUER:
            raise ConfigurationError(
                "CLINIC_ENV=production needs CLINIC_OIDC_ISSUER set to the identity provider's issuer: the development "
                "issuer is refused (anyone with this checkout can sign its tokens).")
        if url_scheme(self.oidc_jwks_url) != "https":
            raise ConfigurationError(
                f"CLINIC_ENV=production needs CLINIC_OIDC_JWKS_URL to be the provider's https:// JWKS URL, got "
                f"{self.oidc_jwks_url!r}: a file holds development keys, and keys fetched over plain http can be "
                "replaced on the way.")
        if url_scheme(self.database_url).partition("+")[0] == "sqlite":
            raise ConfigurationError("CLINIC_ENV=production needs DATABASE_URL to point at PostgreSQL, not SQLite.")
        if _default_credentials(self.database_url, client_certificate_allowed=True):
            raise ConfigurationError(
                "CLINIC_ENV=production refuses DATABASE_URL without a password (in the URL or its ?password=) "
                "or a client certificate (?sslcert=), or with a default one "
                f"({', '.join(repr(p) for p in DEFAULT_PASSWORDS if p)}, or the user's own name).")
        if _default_credentials(self.rabbitmq_url) or url_user(self.rabbitmq_url) == "guest":
            raise ConfigurationError(
                "CLINIC_ENV=production refuses RABBITMQ_URL with the guest account, no password or a default one: "
                "give each service its own broker account and password.")
        for name, url in (("DATABASE_URL", self.database_url), ("RABBITMQ_URL", self.rabbitmq_url),
                          ("CLINIC_OPERATOR_RABBITMQ_URL", self.operator_rabbitmq_url)):
            if any(is_example_secret(password) for password in url_passwords(url)):
                raise_example_secret(name)

    def check_service_role(self) -> None:
        """CLINIC_DATABASE_SERVICE_ROLE is granted with PostgreSQL's GRANT: SQLite has no roles to grant to."""
        if self.database_service_role and url_scheme(self.database_url).partition("+")[0] != "postgresql":
            raise ConfigurationError(
                "CLINIC_DATABASE_SERVICE_ROLE names a PostgreSQL login role to grant the service's tables to: "
                f"DATABASE_URL must point at PostgreSQL then, not {url_scheme(self.database_url) or 'a file'}.")

    @property
    def accepts_development_tokens(self) -> bool:
        """Tokens that `clinic token` signs are accepted: not production, keys from a development JWKS file."""
        return not self.is_production and url_scheme(self.oidc_jwks_url) == "file"


def url_scheme(url: str) -> str:
    """The scheme of a URL in lower case, as every client reads it (HTTPS://, FILE:// and SQLITE:// too):
    the one way settings tell what a URL points at."""
    return urlsplit(url).scheme.lower()


def url_user(url: str) -> str | None:
    """The user name a URL logs in as (None without one): the one way the clinic reads it, for the
    broker account a connection publishes as too (clinic.bus.broker_user)."""
    return unquote(urlsplit(url).username or "") or None


def url_passwords(url: str) -> list[str]:
    """Every password a URL gives: its user part's and any ?password= (which libpq takes over the user part's)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    return ([unquote(parts.password)] if parts.password is not None else []) + query.get("password", [])


def is_example_secret(value: str) -> bool:
    """A value copied from deploy/clinic.env.example (EXAMPLE_MARKER), in any case."""
    return value.strip().lower().startswith(EXAMPLE_MARKER)


def raise_example_secret(name: str) -> NoReturn:
    raise ConfigurationError(
        f"CLINIC_ENV=production refuses {name} with a password from deploy/clinic.env.example (it starts with "
        f"{EXAMPLE_MARKER!r}, and the example file is public): set a password of its own in deploy/clinic.env.")


def _default_credentials(url: str, client_certificate_allowed: bool = False) -> bool:
    """No password, a well-known one, or the user's name again (clinic:clinic). Every password the URL
    gives counts (url_passwords). Without a password, a client certificate (?sslcert= or ?sslkey=) may
    stand in where `client_certificate_allowed`."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    passwords = url_passwords(url)
    if not passwords:
        return not (client_certificate_allowed and ("sslcert" in query or "sslkey" in query))
    users = {unquote(parts.username or ""), *query.get("user", [])}
    return any(password in DEFAULT_PASSWORDS or password in users for password in passwords)


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


def read_publishers(env, name: str, default: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Comma-separated prefix=account pairs (records=clinic-records,...), one account per prefix."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    pairs = []
    for part in raw.split(","):
        prefix, equals, account = (text.strip() for text in part.partition("="))
        if not (equals and prefix and account) or "." in prefix:
            raise ConfigurationError(f"{name} must be prefix=account pairs such as records=clinic-records, got {raw!r}")
        pairs.append((prefix, account))
    if len({prefix for prefix, _ in pairs}) != len(pairs):
        raise ConfigurationError(f"{name} names a prefix twice: each prefix has one publishing account, got {raw!r}")
    return tuple(pairs)


def read_broker_passwords(env, accounts) -> dict[str, str]:
    """The broker accounts' passwords for `clinic broker-definitions`, from CLINIC_BROKER_PASSWORD_<ACCOUNT>
    (clinic-records: CLINIC_BROKER_PASSWORD_CLINIC_RECORDS); a missing one is a ConfigurationError, and so
    is one from the example file in production."""
    passwords, missing = {}, []
    for account in accounts:
        variable = "CLINIC_BROKER_PASSWORD_" + account.upper().replace("-", "_")
        if not env.get(variable):
            missing.append(variable)
        elif read_environment(env) == "production" and is_example_secret(env[variable]):
            raise_example_secret(variable)
        passwords[account] = env.get(variable, "")
    if missing:
        raise ConfigurationError(f"set {', '.join(missing)}: each broker account needs its own password")
    return passwords


def check_deploy_secrets(env) -> list[str]:
    """The secrets a deployment hands its containers, checked before anything that uses them starts
    (`clinic check-secrets`): in production, a ConfigurationError for any *_PASSWORD variable still holding
    a value from deploy/clinic.env.example, naming it; the servers (PostgreSQL's superuser, Keycloak's
    administrator) would take such a value without a word. Returns the names checked."""
    names = sorted(name for name in env if name.endswith("_PASSWORD"))
    if read_environment(env) == "production":
        for name in names:
            if is_example_secret(env[name]):
                raise_example_secret(name)
    return names


def read_role(env, name: str) -> str:
    """A PostgreSQL role name as deploy/ makes them (records_service): lower-case letters, digits and
    underscores, so that it reads the same quoted or not."""
    value = (env.get(name) or "").strip()
    if value and not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", value):
        raise ConfigurationError(f"{name} must be a role name of lower-case letters, digits and underscores, got {value!r}")
    return value


def read_bounded(env, name: str, default: int, lowest: int, highest: int) -> int:
    value = read_int(env, name, default)
    if not lowest <= value <= highest:
        raise ConfigurationError(f"{name} must be between {lowest} and {highest}, got {value}")
    return value


def development_jwks_url(var_dir: Path) -> str:
    """The JWKS file of the development key pair (clinic.identity), under the var directory."""
    return (var_dir / "identity" / "jwks.json").resolve().as_uri()


def read_jwks_url(env) -> str:
    """CLINIC_OIDC_JWKS_URL: https:// (the provider), http:// (a provider on this machine) or file://
    (development keys); unset, the development JWKS under CLINIC_VAR_DIR."""
    url = env.get("CLINIC_OIDC_JWKS_URL") or development_jwks_url(Path(env.get("CLINIC_VAR_DIR") or "var"))
    if url_scheme(url) not in ("https", "http", "file"):
        raise ConfigurationError(f"CLINIC_OIDC_JWKS_URL must be an https://, http:// or file:// URL, got {url!r}")
    return url


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


def read_rate_limit(env, name: str, default: str) -> str:
    """A rate limit in the limits library's notation ("600/minute", "30/minute;300/hour"), checked now so a
    typo fails at start rather than on the first request."""
    from limits import parse_many

    value = (env.get(name) or default).strip()
    try:
        parse_many(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a rate limit such as 600/minute or 30/minute;300/hour, got {value!r}") from None
    return value


# The stores the limits library can share between replicas that deploy/ and the README speak of.
RATE_LIMIT_STORES = ("memory://", "redis://", "rediss://", "redis+sentinel://")


def read_limits_and_docs(env) -> dict:
    """The rate limit settings, the trusted proxies and whether the API documents are served."""
    storage = env.get("CLINIC_RATE_LIMIT_STORAGE_URL") or Settings.rate_limit_storage_url
    if not storage.startswith(RATE_LIMIT_STORES):
        raise ConfigurationError(f"CLINIC_RATE_LIMIT_STORAGE_URL must start with one of {', '.join(RATE_LIMIT_STORES)}, "
                                 f"got {storage.partition('://')[0]!r}")
    proxies = read_int(env, "CLINIC_TRUSTED_PROXIES", Settings.trusted_proxies)
    if not 0 <= proxies <= 5:
        raise ConfigurationError(f"CLINIC_TRUSTED_PROXIES must be the number of reverse proxies in front (0 to 5), got {proxies}")
    docs = env.get("CLINIC_API_DOCS") or ("off" if read_environment(env) == "production" else "on")
    if docs not in ("on", "off"):
        raise ConfigurationError(f"CLINIC_API_DOCS must be on or off, got {docs!r}")
    return {
        "rate_limit_per_subject": read_rate_limit(env, "CLINIC_RATE_LIMIT_PER_SUBJECT", Settings.rate_limit_per_subject),
        "rate_limit_per_address": read_rate_limit(env, "CLINIC_RATE_LIMIT_PER_ADDRESS", Settings.rate_limit_per_address),
        "rate_limit_per_device": read_rate_limit(env, "CLINIC_RATE_LIMIT_PER_DEVICE", Settings.rate_limit_per_device),
        "rate_limit_patient_search": read_rate_limit(env, "CLINIC_RATE_LIMIT_PATIENT_SEARCH", Settings.rate_limit_patient_search),
        "rate_limit_storage_url": storage,
        "trusted_proxies": proxies,
        "api_docs": docs == "on",
    }


def load_settings(service: str, env: dict | None = None) -> Settings:
    """Settings for one service from the environment (os.environ unless given)."""
    env = os.environ if env is None else env
    return Settings(
        service=service,
        database_url=env.get("DATABASE_URL") or default_database_url(service),
        rabbitmq_url=env.get("RABBITMQ_URL") or Settings.rabbitmq_url,
        rabbitmq_ca_file=env.get("CLINIC_RABBITMQ_CA_FILE") or "",
        broker_publishers=read_publishers(env, "CLINIC_BROKER_PUBLISHERS", DEFAULT_BROKER_PUBLISHERS),
        operator_rabbitmq_url=env.get("CLINIC_OPERATOR_RABBITMQ_URL") or "",
        database_service_role=read_role(env, "CLINIC_DATABASE_SERVICE_ROLE"),
        migrate_wait_seconds=read_float(env, "CLINIC_MIGRATE_WAIT_SECONDS", Settings.migrate_wait_seconds),
        environment=read_environment(env),
        bus_namespace=env.get("CLINIC_BUS_NAMESPACE") or Settings.bus_namespace,
        oidc_issuer=env.get("CLINIC_OIDC_ISSUER") or DEVELOPMENT_ISSUER,
        oidc_audience=env.get("CLINIC_OIDC_AUDIENCE") or f"clinic-{service}",
        oidc_jwks_url=read_jwks_url(env),
        oidc_roles_claim=env.get("CLINIC_OIDC_ROLES_CLAIM") or Settings.oidc_roles_claim,
        token_max_lifetime_minutes=read_bounded(env, "CLINIC_TOKEN_MAX_LIFETIME_MINUTES", Settings.token_max_lifetime_minutes,
                                                1, 24 * 60),
        token_clock_skew_seconds=read_bounded(env, "CLINIC_TOKEN_CLOCK_SKEW_SECONDS", Settings.token_clock_skew_seconds, 0, 300),
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
        **read_limits_and_docs(env),
    )



@dataclass(frozen=True)
class DemoSettings:
    """`make run`'s demo clinic (clinic.demo) and its simulated monitors (clinic.monitors)."""

    enabled: bool  # CLINIC_DEMO: on (the default) or off
    environment: str
    var_dir: Path
    apps: tuple[tuple[str, str], ...]  # (service, base URL): web_port's, as make run binds them


def load_demo_settings(env: dict | None = None) -> DemoSettings:
    env = os.environ if env is None else env  # CLINIC_DEMO, CLINIC_PORT_OFFSET, CLINIC_VAR_DIR, CLINIC_ENV
    demo, offset = env.get("CLINIC_DEMO") or "on", read_int(env, "CLINIC_PORT_OFFSET", 0)
    if demo not in ("on", "off"):
        raise ConfigurationError(f"CLINIC_DEMO must be on or off, got {demo!r}")
    apps = tuple((service, f"http://127.0.0.1:{web_port(service, offset)}") for service in SERVICES)
    return DemoSettings(demo == "on", read_environment(env), Path(env.get("CLINIC_VAR_DIR") or "var"), apps)


def web_port(service: str, offset: int = 0) -> int:
    """The port `make run` binds a service's web app to: 8101-8104 in SERVICES' order, moved by
    CLINIC_PORT_OFFSET (`offset`)."""
    return 8101 + SERVICES.index(service) + offset
