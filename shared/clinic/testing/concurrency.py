"""Running things at once in tests: calls released together behind a barrier, and a service's worker
running in a thread for the length of a test."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from clinic import bus, events
from clinic.config import Settings
from clinic.worker import Worker


def at_once(calls: list[Callable[[], object]], timeout: float = 60) -> list:
    """Run every call in its own thread, all released at the same moment; their results, in order.
    Fails when a call does not finish (the race the test wanted hung instead)."""
    gate = threading.Barrier(len(calls))
    results: list = [None] * len(calls)
    finished = [False] * len(calls)

    def run(index: int) -> None:
        gate.wait()
        results[index] = calls[index]()
        finished[index] = True

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert all(finished), "a racer did not finish"
    return results


@contextmanager
def running(worker: Worker, name: str = "worker") -> Iterator[Worker]:
    """The worker running in a thread, its consumer connected; stopped and joined afterwards."""
    thread = threading.Thread(target=worker.run, name=name, daemon=True)
    thread.start()
    try:
        if worker.consumer is not None:
            assert worker.consumer.ready.wait(15), "the worker did not connect to the broker"
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=15)


@contextmanager
def publishing(settings: Settings) -> Iterator[Callable[[events.Event], events.Event]]:
    """send(event) onto the settings' exchange, as another service's relay would: on the test broker, with
    the account that owns the event's prefix (clinic.testing.servers.as_publisher_of)."""
    from clinic.testing.servers import as_publisher_of

    publishers: dict[str, bus.Publisher] = {}

    def send(event: events.Event) -> events.Event:
        owner = as_publisher_of(settings, event.type)
        if owner.rabbitmq_url not in publishers:
            publishers[owner.rabbitmq_url] = bus.Publisher(owner)
        publishers[owner.rabbitmq_url].publish(event.type, event.id, event.to_json())
        return event

    try:
        yield send
    finally:
        for publisher in publishers.values():
            publisher.close()
