"""The broker accounts' permissions as regexes, their password hashes, the publishers setting, and
the consumer's check of who published an event (the broker's own enforcement is in
tests/integration/test_broker_accounts.py and test_forged_events.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import stat

import pika
import pytest

from clinic import broker_accounts, bus, cli, events
from clinic.config import OPERATOR_ACCOUNT, SERVICES, ConfigurationError, load_settings
from clinic.inbox import Consumer, Delivery


def allowed(pattern: str, name: str) -> bool:
    return re.search(pattern, name) is not None   # RabbitMQ matches permissions as re:run does: unanchored


@pytest.mark.parametrize("namespace", ["clinic", "test-0123abcd"])
def test_a_service_account_reaches_the_shared_exchanges_and_its_own_names_only(namespace):
    permissions = broker_accounts.service_permissions("records")
    own = [f"{namespace}.records", f"{namespace}.records.dead", f"{namespace}.records.retry",
           f"{namespace}.records.requeue", f"{namespace}.records.wait.1000ms"]
    shared = [f"{namespace}.events", f"{namespace}.unrouted", f"{namespace}.dead"]
    others = [f"{namespace}.scheduling", f"{namespace}.scheduling.requeue", f"{namespace}.scheduling.retry",
              f"{namespace}.scheduling.dead", f"{namespace}.records2", f"{namespace}.records.other",
              f"{namespace}.recordsx.retry", f"{namespace}.events.x", "records", "amq.topic", ""]
    for kind in ("configure", "write", "read"):
        assert all(allowed(permissions[kind], name) for name in own + shared), kind
        assert not any(allowed(permissions[kind], name) for name in others), kind


def test_topic_permissions_let_each_account_publish_its_own_prefix_only():
    settings = load_settings("records", env={})
    by_account = {entry["user"]: entry for entry in broker_accounts.topic_permissions(settings)}
    assert set(by_account) == {"clinic-records", "clinic-scheduling", "clinic-sessions", "clinic-notifications"}
    assert OPERATOR_ACCOUNT not in by_account, "an account with none is unrestricted there"
    write = by_account["clinic-records"]["write"]
    assert allowed(write, "records.patient.registered")
    assert not allowed(write, "sessions.session.completed") and not allowed(write, "recordsx.a")
    assert not allowed(write, "x.records.a")
    assert {entry["exchange"] for entry in by_account.values()} == {"clinic.events"}


def test_only_the_service_and_the_operator_may_publish_into_a_services_requeue_exchange():
    """What a consumer believes of a message from its requeue exchange (the publisher header) holds only
    if no other account may write there: make run's definitions (no guest) give no other account that."""
    settings = load_settings("records", env={})
    services = SERVICES
    accounts = broker_accounts.all_accounts(settings, services)
    assert accounts == ["clinic-scheduling", "clinic-sessions", "clinic-records", "clinic-notifications", OPERATOR_ACCOUNT]
    definitions = broker_accounts.broker_definitions(settings, {a: f"{a}-pw" for a in accounts}, services)
    assert {user["name"] for user in definitions["users"]} == set(accounts)
    for service in services:
        writers = {entry["user"] for entry in definitions["permissions"]
                   if allowed(entry["write"], f"clinic.{service}.requeue")}
        assert writers == {broker_accounts.account_of(settings, service), OPERATOR_ACCOUNT}, service


def test_the_definitions_tag_only_the_operator_as_impersonator_and_hash_passwords_as_rabbitmq_does():
    settings = load_settings("records", env={})
    accounts = broker_accounts.all_accounts(settings, ("records", "sessions"))
    definitions = broker_accounts.broker_definitions(settings, {a: f"{a}-pw" for a in accounts}, ("records", "sessions"))
    users = {user["name"]: user for user in definitions["users"]}
    assert set(users) == set(accounts), "no guest unless asked for"
    assert [name for name, user in users.items() if "impersonator" in user["tags"]] == [OPERATOR_ACCOUNT]
    stored = base64.b64decode(users["clinic-records"]["password_hash"])
    salt, digest = stored[:4], stored[4:]
    assert digest == hashlib.sha256(salt + b"clinic-records-pw").digest()
    assert "clinic-records-pw" not in str(definitions)


def test_broker_publishers_are_read_as_prefix_account_pairs():
    assert load_settings("records", env={}).broker_publishers[0] == ("records", "clinic-records")
    settings = load_settings("records", env={"CLINIC_BROKER_PUBLISHERS": "records=a, scheduling=b"})
    assert settings.broker_publishers == (("records", "a"), ("scheduling", "b"))
    for bad in ("records", "records=", "=a", "records=a,records=b", "records.patient=a"):
        with pytest.raises(ConfigurationError, match="CLINIC_BROKER_PUBLISHERS"):
            load_settings("records", env={"CLINIC_BROKER_PUBLISHERS": bad})


def test_an_account_url_keeps_the_host_and_encodes_the_password():
    url = broker_accounts.url_for_account("amqp://guest:guest@10.0.0.1:5672/%2F", "clinic-records", "a/b@c")
    assert url == "amqp://clinic-records:a%2Fb%40c@10.0.0.1:5672/%2F"
    assert bus.broker_user(load_settings("records", env={"RABBITMQ_URL": url})) == "clinic-records"
    assert bus.broker_user(load_settings("records", env={"RABBITMQ_URL": "amqp://10.0.0.1/%2F"})) == "guest", "pika's default"


def delivery(exchange: str, routing_key: str, message_type: str | None, user_id: str | None = None,
             headers: dict | None = None) -> Delivery:
    method = pika.spec.Basic.Deliver(delivery_tag=1, exchange=exchange, routing_key=routing_key)
    return Delivery(method, pika.BasicProperties(type=message_type, user_id=user_id, headers=headers), b"")


def test_the_consumer_believes_the_user_id_from_the_events_exchange_and_its_header_only_from_its_requeue_exchange():
    settings = load_settings("scheduling", env={})
    consumer = Consumer(settings, None, None, {})
    requeue = bus.requeue_exchange(settings)
    event = events.Event(type=events.PLAN_ACTIVATED, data={}, producer="records")
    claim = {bus.PUBLISHER_HEADER: "clinic-records"}
    believed = [
        delivery(settings.exchange, event.type, event.type, user_id="clinic-records"),
        delivery(requeue, event.type, event.type, headers=claim),
    ]
    unnamed = "published by an account the broker did not name, which does not own records.*"
    differ = "routing key, AMQP type and body type differ"
    refused = [
        ("published by clinic-sessions, which does not own records.*",
         delivery(settings.exchange, event.type, event.type, user_id="clinic-sessions", headers=claim)),
        (unnamed, delivery(settings.exchange, event.type, event.type, headers=claim)),
        (unnamed, delivery("clinic.records.requeue", event.type, event.type, headers=claim)),   # another's requeue
        (differ, delivery(settings.exchange, events.SESSION_COMPLETED, event.type, user_id="clinic-records")),
        (differ, delivery(settings.exchange, event.type, events.SESSION_COMPLETED, user_id="clinic-records")),
    ]
    for item in believed:
        assert consumer._not_as_published(item, event) is None
    for reason, item in refused:
        assert consumer._not_as_published(item, event) == reason


def test_who_published_a_message_is_believed_as_the_exchange_it_came_through_vouches():
    """The whole table of bus.vouched_publisher, which the consumer and the dead-letter listings share."""
    settings = load_settings("scheduling", env={})
    claim = {bus.PUBLISHER_HEADER: "clinic-records"}
    signed = pika.BasicProperties(user_id="clinic-sessions", headers=claim)
    expected = {
        settings.exchange: "clinic-sessions",                  # the user_id the broker checked
        settings.dead_letter_exchange: "clinic-sessions",      # dead-lettered as published; any service writes there
        bus.retry_exchange(settings): "clinic-records",        # the service's own: the header its consumer wrote
        bus.requeue_exchange(settings): "clinic-records",
        "clinic.records.requeue": "",                          # another service's
        "clinic.records.retry": "",
        settings.unrouted_exchange: "",
        "": "clinic-sessions",                                  # the default exchange: the operations account only
    }
    assert {exchange: bus.vouched_publisher(settings, exchange, signed) for exchange in expected} == expected
    unsigned = pika.BasicProperties(headers={bus.PUBLISHER_HEADER: 7})
    for exchange in expected:
        assert bus.vouched_publisher(settings, exchange, unsigned) == "", "no user_id, and a header that names nobody"
    assert bus.vouched_publisher(settings, bus.requeue_exchange(settings), pika.BasicProperties()) == ""


def test_broker_definitions_written_over_a_world_readable_file_leave_it_private(tmp_path, monkeypatch):
    for account in broker_accounts.all_accounts(load_settings("cli", env={}), SERVICES):
        monkeypatch.setenv("CLINIC_BROKER_PASSWORD_" + account.upper().replace("-", "_"), f"{account}-pw")
    out = tmp_path / "definitions.json"
    out.write_text("{}")
    out.chmod(0o644)
    cli.write_broker_definitions(load_settings("cli", env={}), str(out))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600, "password hashes"
    assert {user["name"] for user in json.loads(out.read_text())["users"]} == {*broker_accounts.all_accounts(
        load_settings("cli", env={}), SERVICES)}
