"""A service's worker process: its consumer in the main thread, its outbox relay in another.

Each runs its own pika connection. SIGTERM or SIGINT stops both cleanly: the
message being handled is finished (or returned to the queue), the relay's batch
is committed or rolled back.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa

from clinic.config import Settings
from clinic.db import create_engine, utcnow
from clinic.inbox import Consumer, Handler
from clinic.logs import configure_logging
from clinic.outbox import Relay

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, settings: Settings, metadata: sa.MetaData, handlers: dict[str, Handler], engine=None,
                 clock: Callable[[], datetime] = utcnow):
        """`clock` gives each event's unit of work its time: the real one, but in tests."""
        self.settings = settings
        self.engine = engine or create_engine(settings.database_url, settings.database_timeout_seconds)
        self.relay = Relay(settings, self.engine, metadata.tables["outbox"])
        self.consumer = Consumer(settings, self.engine, metadata, handlers, clock) if handlers else None
        self._stopped = threading.Event()

    def run(self) -> None:
        relay_thread = threading.Thread(target=self.relay.run, name=f"{self.settings.service}-relay", daemon=True)
        relay_thread.start()
        log.info("worker %s started", self.settings.service)
        if self.consumer is not None:
            self.consumer.run()
        else:
            self._stopped.wait()
        self.relay.stop()
        relay_thread.join(timeout=10)
        log.info("worker %s stopped", self.settings.service)

    def stop(self, *_args) -> None:
        self._stopped.set()
        self.relay.stop()
        if self.consumer is not None:
            self.consumer.stop()


def run_worker(settings: Settings, metadata: sa.MetaData, handlers: dict[str, Handler]) -> None:
    """Entry point body for every service's worker: `metadata` holds the service's tables, outbox and inbox among them."""
    configure_logging(settings)
    settings.check_safe_to_run()
    worker = Worker(settings, metadata, handlers)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.run()
