"""A broker that accepts connections and never answers in AMQP (a frozen RabbitMQ, or something else
listening on its port): pika fails each attempt with its own connection-workflow errors (not
AMQPConnectionError), which must count as the broker being away. A worker's consumer and relay keep
trying, with one warning each and no traceback; `clinic` says in one line that the broker is not
reachable."""

from __future__ import annotations

import logging
import socket
import threading

import pytest

from clinic import bus, cli
from clinic.db import create_engine
from clinic.testing import eventually
from clinic.worker import Worker
from tests.support import probe


class SilentListener:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte."""

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(50)
        self.port = self.socket.getsockname()[1]
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self.socket.close()
        for connection in self.accepted:
            connection.close()


@pytest.fixture
def silent_broker(monkeypatch):
    # Each attempt fails after the handshake's time limit: short here, so that the test sees several.
    monkeypatch.setattr(bus, "HANDSHAKE_TIMEOUT_SECONDS", 0.5)
    listener = SilentListener()
    yield listener
    listener.close()


def test_a_worker_keeps_trying_a_broker_that_never_answers_with_one_warning_for_each_loop(
        silent_broker, settings_for, tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'probe.db'}"
    engine = create_engine(url)
    probe.metadata.create_all(engine)
    probe.write_events(engine, 1)   # for the relay to publish: it connects only then
    settings = settings_for("probe", url, rabbitmq_url=silent_broker.url, reconnect_max_seconds=0.2)
    worker = Worker(settings, probe.metadata, probe.HANDLERS, engine=engine)
    ended = []
    thread = threading.Thread(target=lambda: ended.append(worker.run()), daemon=True)
    with caplog.at_level(logging.DEBUG, logger="clinic"):
        thread.start()
        try:
            # Both loops connect: several attempts each, every one failing at the handshake.
            eventually(lambda: len(silent_broker.accepted) >= 8, timeout=30, message="several connection attempts")
            assert thread.is_alive() and not ended, "the worker stopped"
            assert worker.stuck() == {}
        finally:
            worker.stop()
            thread.join(timeout=15)
    assert ended == [None], "the worker ended with an error"
    # pika's own loggers are quietened by clinic.logs.configure_logging in a worker process.
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING and record.name.startswith("clinic")]
    assert sorted(record.getMessage().split(" unavailable")[0] for record in warnings) == \
        ["consumer: the broker", "relay: the broker"], [record.getMessage() for record in warnings]
    assert all("AMQPConnectorStackTimeout" in record.getMessage() and record.exc_info is None for record in warnings)


def test_clinic_says_in_one_line_that_a_broker_that_never_answers_is_not_reachable(silent_broker, monkeypatch, capsys):
    monkeypatch.setenv("RABBITMQ_URL", silent_broker.url)
    assert cli.main(["dead-letters", "list", "records"]) == 1
    out, err = capsys.readouterr()
    assert err == "clinic: RabbitMQ is not reachable (AMQPConnectorStackTimeout)\n"
    assert out == ""
