"""The broker accounts: one per service, and the operations account, with what each may do.

Each service connects as its own RabbitMQ user. Regular permissions (configure, write, read: regexes
over exchange and queue names, any namespace) let it declare and use the shared exchanges and its own
queues and exchanges only; topic permissions on the events exchange let it publish only under its own
prefix. The broker checks every publish's AMQP user_id against the connection's user, so a consumer
knows who published an event it takes from the events exchange.

The operations account (OPERATOR_ACCOUNT) is tagged `impersonator`: the only one the broker lets
publish with another user's user_id, which the `clinic` command's replays need to keep a message's
publisher.

broker_definitions() writes all of it as a RabbitMQ definitions document (what `load_definitions`
reads at boot, and `rabbitmqctl import_definitions` or the management API's /api/definitions take).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from urllib.parse import quote, urlsplit, urlunsplit

from clinic.config import OPERATOR_ACCOUNT, Settings

# Any bus namespace (clinic, or a test's test-<hex>): the regexes hold for all of them.
_NAMESPACE = r"[^.]+"
# The exchanges every service declares (the publisher's topology) and binds its queues to.
_SHARED = rf"^{_NAMESPACE}\.(events|unrouted|dead)$"


def account_of(settings: Settings, service: str) -> str:
    """The broker account a service connects as: the owner of its own prefix, else clinic-<service>."""
    return dict(settings.broker_publishers).get(service, f"clinic-{service}")


def all_accounts(settings: Settings, services) -> list[str]:
    """Every account a broker for `services` has: one per service, and the operations account."""
    return [account_of(settings, service) for service in services] + [OPERATOR_ACCOUNT]


def service_permissions(service: str) -> dict[str, str]:
    """Configure, write and read regexes for a service's account.

    Configure and write: the shared exchanges (declared on connect; write because the events exchange's
    alternate exchange and the work queue's dead-letter exchange need it), and the service's own
    queue, dead-letter queue, retry and requeue exchanges and delay queues. Read: the shared exchanges
    (to bind from them; the unrouted queue shares the unrouted exchange's name) and its own names
    (declaring a queue with a dead-letter exchange needs read on the queue, and write on that exchange)."""
    own = rf"{_SHARED}|^{_NAMESPACE}\.{re.escape(service)}(\.(dead|retry|requeue|wait\.[0-9]+ms))?$"
    return {"configure": own, "write": own, "read": own}


def topic_write_pattern(prefixes) -> str:
    """The routing keys an account may publish to the events exchange: its own prefixes."""
    return "^(" + "|".join(re.escape(prefix) for prefix in sorted(prefixes)) + r")\."


def prefixes_by_account(settings: Settings) -> dict[str, list[str]]:
    owned: dict[str, list[str]] = {}
    for prefix, account in settings.broker_publishers:
        owned.setdefault(account, []).append(prefix)
    return owned


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)), a 4-byte salt."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode("utf-8")).digest()).decode("ascii")


def topic_permissions(settings: Settings, exchange: str | None = None) -> list[dict]:
    """Topic permissions on the events exchange (`exchange`, else the settings' own): each publishing
    account writes its prefixes only; every account may bind to any key. The operations account has
    none there, which leaves it unrestricted."""
    return [{"user": account, "vhost": "/", "exchange": exchange or settings.exchange,
             "write": topic_write_pattern(prefixes), "read": ".*"}
            for account, prefixes in sorted(prefixes_by_account(settings).items())]


def broker_definitions(settings: Settings, passwords: dict[str, str], services,
                       development_guest: bool = False) -> dict:
    """A definitions document with an account for each service, the operations account, their
    permissions and their topic permissions on settings.exchange. `passwords` has one per account
    (account_of(settings, service) and OPERATOR_ACCOUNT). `development_guest` keeps guest/guest as an
    administrator (loading definitions at boot creates no default user): for the test session's and the
    benchmarks' own brokers only, never `make run`'s, where guest could publish as anyone."""
    users, permissions = [], []
    for service in services:
        account = account_of(settings, service)
        users.append(user(account, passwords[account], ""))
        permissions.append({"user": account, "vhost": "/", **service_permissions(service)})
    users.append(user(OPERATOR_ACCOUNT, passwords[OPERATOR_ACCOUNT], "impersonator"))
    permissions.append({"user": OPERATOR_ACCOUNT, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"})
    if development_guest:
        users.append(user("guest", "guest", "administrator"))
        permissions.append({"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"})
    return {"users": users, "vhosts": [{"name": "/"}], "permissions": permissions,
            "topic_permissions": topic_permissions(settings)}


def user(name: str, password: str, tags: str) -> dict:
    """One user of a definitions document, its password hashed as RabbitMQ does."""
    return {"name": name, "password_hash": password_hash(password),
            "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": tags}


def url_for_account(url: str, account: str, password: str) -> str:
    """The broker URL `url` with another account's user name and password."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(account, safe='')}:{quote(password, safe='')}@{host}"))
