"""Headers any client may set (x-death, x-clinic-*) read defensively by clinic.bus: nothing odd raises,
makes a message retry for ever, or is sent on to the broker in a shape that breaks its dead-lettering
(RabbitMQ 3.10 stops dead-lettering a node's at-least-once queues on an x-death entry that is not a
table, or whose count it cannot add one to: tried on a broker of our own, not here)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pika
import pytest

from clinic import bus
from clinic.config import load_settings

SETTINGS = load_settings("records", env={})
DELAY_QUEUE = bus.delay_queue(SETTINGS, 1000)
WHEN = datetime(2030, 1, 7, 14, tzinfo=timezone.utc)


def expired(count, queue: str = DELAY_QUEUE, reason: str = "expired") -> dict:
    """An x-death entry as the broker writes it."""
    return {"queue": queue, "reason": reason, "count": count, "exchange": "clinic.retry",
            "routing-keys": ["records.patient.registered"], "time": WHEN}


def test_expiries_count_the_broker_s_entries_for_the_service_s_delay_queues_only():
    headers = {"x-death": [expired(2), expired(1, bus.delay_queue(SETTINGS, 5000)), expired(7, "clinic.other.delay.1000ms"),
                           expired(4, SETTINGS.queue, "delivery_limit")]}
    assert bus.expiries(headers, SETTINGS) == 3


@pytest.mark.parametrize("x_death", [
    "not a list",
    {"queue": DELAY_QUEUE, "reason": "expired", "count": 3},
    [1, 2, "three"],
    [expired("3"), expired(Decimal("2.5")), expired(2.5), expired(True), expired(None), expired(-1000)],
    [{**expired(3), "queue": 5}, {**expired(3), "reason": None}],
])
def test_an_x_death_not_as_the_broker_writes_it_counts_nothing_and_raises_nothing(x_death):
    assert bus.expiries({"x-death": x_death}, SETTINGS) == 0
    assert bus.deaths({"x-death": x_death}) == []


def test_the_well_formed_entries_of_an_odd_x_death_still_count():
    assert bus.expiries({"x-death": ["junk", expired("x"), expired(2)]}, SETTINGS) == 2


@pytest.mark.parametrize("mark", [1_000_000, 3, -5, "1", True, 1.0, None, [1]])
def test_a_replay_mark_that_no_replay_wrote_is_ignored(mark):
    # Two expiries counted: a mark above that, or not a whole number, would otherwise keep the
    # message's attempts at 0 and have it retried every time, for ever.
    headers = {"x-death": [expired(2)], bus.REPLAYED_AFTER_HEADER: mark}
    assert bus.expiries(headers, SETTINGS) == 2


def test_a_genuine_replay_mark_gives_fresh_attempts():
    headers = {"x-death": [expired(5)], bus.REPLAYED_AFTER_HEADER: 4}
    assert bus.expiries(headers, SETTINGS) == 1
    assert bus.expiries(headers, SETTINGS, since_replay=False) == 5


@pytest.mark.parametrize("headers", [None, {}, {"x-death": None}, "not a table"])
def test_no_headers_is_no_expiry(headers):
    assert bus.expiries(headers, SETTINGS) == 0


def test_a_forwarded_message_carries_only_the_x_death_entries_the_broker_can_count_on():
    good = expired(2)
    properties = pika.BasicProperties(message_id="m-1", headers={
        "x-death": [1, "x", expired("abc"), expired(Decimal("2.5")), expired(True), expired(-3), good],
        "x-clinic-something": "kept",
    })
    sent = bus.forwarded(properties, **{bus.STEP_HEADER: "1000"})
    assert sent.headers["x-death"] == [good]
    assert sent.headers["x-clinic-something"] == "kept" and sent.headers[bus.STEP_HEADER] == "1000"
    sent.encode()


def test_a_forwarded_message_without_a_usable_x_death_has_none_and_the_broker_starts_one():
    sent = bus.forwarded(pika.BasicProperties(headers={"x-death": "junk", "other": 1}))
    assert "x-death" not in sent.headers and sent.headers["other"] == 1


def test_a_header_pika_can_read_but_not_send_is_left_out_with_a_warning(caplog):
    # An AMQP float, from another client: pika decodes it, and cannot encode it again.
    properties = pika.BasicProperties(message_id="m-2", headers={"ratio": 0.5, "nested": {"deep": [1.5]}, "fine": "yes"})
    sent = bus.forwarded(properties)
    assert sent.headers == {"fine": "yes"}
    sent.encode()
    assert "m-2" in caplog.text and "nested, ratio" in caplog.text and "0.5" not in caplog.text


def test_only_routing_keys_a_message_can_be_published_with_again_are_read_from_x_death():
    assert bus.routing_keys_of({"routing-keys": ["a.b", 5, "x" * 256, "c.d"]}) == ["a.b", "c.d"]
    assert bus.routing_keys_of({"routing-keys": "a.b"}) == []
    assert bus.routing_keys_of({}) == []
