"""What there is to watch, on the real RabbitMQ and PostgreSQL: every metric of clinic.metrics after a
small workload, on the web app's /metrics and on a worker's metrics port; a worker's /healthz naming a
relay that died or is stuck; and gunicorn's master adding up its worker processes' metrics on its own
port, answering /healthz while every worker is stopped."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from clinic import events, metrics
from clinic import worker as worker_module
from clinic.db import create_engine
from clinic.localservers import free_port, stop_process_group, wait_for_port
from clinic.ops import outbox_status
from clinic.testing import eventually
from clinic.testing.concurrency import publishing, running
from clinic.testing.service_apps import sqlite_service_app, staff_token
from clinic.worker import Job, Worker
from tests.support import probe

ROOT = Path(__file__).resolve().parents[2]
ALL_METRICS = {value._name: value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)}
WEB_METRICS = {"clinic_http_requests", "clinic_http_request_duration_seconds", "clinic_database_unavailable"}


def get(port: int, path: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


def health(port: int) -> tuple[int, dict]:
    status, body = get(port, "/healthz")
    return status, json.loads(body)


def families(text: str) -> dict[str, list]:
    """Every sample of a Prometheus text, by metric name (a counter's without _total)."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(text: str, name: str, **labels) -> float:
    return sum(sample.value for samples in families(text).values() for sample in samples
               if sample.name == name and all(sample.labels.get(key) == wanted for key, wanted in labels.items()))


def shown_for(text: str, service: str) -> set[str]:
    """The metrics with at least one sample labelled with `service`."""
    return {name for name, samples in families(text).items() if any(sample.labels.get("service") == service for sample in samples)}


def test_every_metric_is_exposed_after_a_small_workload_on_the_worker_s_port_and_the_web_s(probe_databases, settings_for, tmp_path):
    _, engine, (_, url) = probe_databases
    port = free_port()
    # A name no other test uses: what is counted for it was counted here.
    settings = settings_for("metered", url, metrics_port=port, retry_delays_seconds=(0.2,))
    started = time.time()
    worker = Worker(settings, probe.metadata, probe.HANDLERS, engine=engine, ops_host="127.0.0.1")
    with running(worker, "metered-worker"), publishing(settings) as send:
        # Three events in the worker's own outbox (once its queue is bound to them): its relay
        # publishes them, its consumer applies them.
        probe.write_events(engine, 3, start=100)
        twice = send(events.Event(type=probe.THING, data={"sequence": 1}, producer="probe"))
        send(twice)
        send(events.Event(type=probe.POISON, data={"sequence": 2}, producer="probe"))
        eventually(lambda: probe.applied_counts(engine) == (4, 4), timeout=30, message="four events applied")

        def worker_metrics_shown():
            text = get(port, "/metrics")[1].decode()
            missing = set(ALL_METRICS) - WEB_METRICS - shown_for(text, "metered")
            assert not missing and value(text, "clinic_messages_dead_lettered_total", service="metered") == 1, missing
            return text

        text = eventually(worker_metrics_shown, timeout=30, message="every worker metric on the metrics port")

    assert value(text, "clinic_messages_consumed_total", service="metered", event_type=probe.THING) == 5
    assert value(text, "clinic_messages_applied_total", service="metered", event_type=probe.THING) == 4
    assert value(text, "clinic_event_apply_lag_seconds_count", service="metered", event_type=probe.THING) == 4
    assert value(text, "clinic_messages_duplicate_total", service="metered", event_type=probe.THING) == 1
    assert value(text, "clinic_messages_retried_total", service="metered", event_type=probe.POISON) == 1
    assert value(text, "clinic_messages_dead_lettered_total", service="metered", event_type=probe.POISON) == 1
    assert value(text, "clinic_relay_published_total", service="metered") == 3
    assert value(text, "clinic_relay_last_publish_timestamp_seconds", service="metered") >= started
    assert value(text, "clinic_outbox_backlog", service="metered") == 0
    assert value(text, "clinic_outbox_oldest_unpublished_age_seconds", service="metered") == 0

    # The web: a request answered, and one the database could not serve.
    app = sqlite_service_app("scheduling", tmp_path)
    client = app.test_client()
    token = {"Authorization": f"Bearer {staff_token(app)}"}
    assert client.get("/rooms", headers=token).status_code == 200
    app.extensions["clinic.engine"].dispose()
    # Nothing listens there: the connection is refused at once.
    app.extensions["clinic.engine"] = create_engine(f"postgresql://clinic@127.0.0.1:{free_port()}/nowhere")
    assert client.get("/rooms", headers=token).get_json()["error"]["code"] == "database_unavailable"
    web = client.get("/metrics").get_data(as_text=True)
    assert WEB_METRICS <= shown_for(web, "scheduling")
    assert set(ALL_METRICS) - WEB_METRICS <= shown_for(web, "metered"), "the web's /metrics is the same registry"


def test_outbox_status_reads_a_postgresql_outbox_and_names_one_that_is_away(probe_databases):
    producer, _, (producer_url, _) = probe_databases
    probe.write_events(producer, 3)
    lines = []
    waiting, = outbox_status(["records"], env={"DATABASE_URL": producer_url}, out=lines.append)
    assert waiting["unpublished"] == 3 and 0 <= waiting["oldest_age_seconds"] < 60
    assert lines[0].startswith("records: 3 unpublished, the oldest ")
    away, = outbox_status(["records"], env={"DATABASE_URL": f"postgresql://clinic@127.0.0.1:{free_port()}/records"}, out=lines.append)
    assert away["problem"] == "could not read its outbox (OperationalError)"


# --- a worker's liveness ----------------------------------------------------------------------


@pytest.fixture
def probe_worker(probe_databases, settings_for):
    """probe_worker(**changes) -> (a probe Worker with a metrics port on 127.0.0.1, not started, its port)."""
    _, engine, (_, url) = probe_databases

    def make(**changes) -> tuple[Worker, int]:
        port = free_port()
        settings = settings_for("probe", url, metrics_port=port, **changes)
        jobs = [Job("now and then", timedelta(hours=1), lambda uow: None)]
        return Worker(settings, probe.metadata, probe.HANDLERS, engine=engine, jobs=jobs, ops_host="127.0.0.1"), port

    return make


def test_a_worker_is_alive_while_its_consumer_relay_and_jobs_beat(probe_worker, monkeypatch):
    # Short, so that the test sees several thresholds pass: the loops beat at least once a second.
    monkeypatch.setattr(worker_module, "STUCK_AFTER_SECONDS", 2.0)
    worker, port = probe_worker()
    answers = []
    with running(worker):
        until = time.monotonic() + 5

        def five_seconds_of_answers():
            answers.append(health(port))
            return time.monotonic() > until

        eventually(five_seconds_of_answers, timeout=15, interval=0.2, message="five seconds of health checks")
    assert {status for status, _ in answers} == {200}, [body for status, body in answers if status != 200][:3]
    assert answers[-1][1] == {"status": "ok"}


def test_a_relay_that_died_is_logged_and_stops_the_worker_naming_it(probe_worker, caplog):
    worker, _port = probe_worker()

    def broken_relay():
        raise RuntimeError("the relay broke")

    worker.relay.run = broken_relay
    # The worker stops its other loops and raises, so that its process exits with status 1 and is restarted.
    with pytest.raises(worker_module.LoopDied):
        worker.run()
    assert worker.stuck() == {"relay": "not running"}
    assert "the relay died" in caplog.text and "RuntimeError" in caplog.text


def test_a_relay_that_is_stuck_is_named_on_healthz_and_the_loops_that_beat_are_not(probe_worker, monkeypatch):
    monkeypatch.setattr(worker_module, "STUCK_AFTER_SECONDS", 2.0)
    worker, port = probe_worker()
    released = threading.Event()
    # As a relay blocked in a call that never returns: alive, and silent.
    worker.relay.run = lambda: released.wait(30)
    try:
        with running(worker):
            assert health(port)[0] == 200, "not stuck before the threshold"
            status, body = eventually(lambda: (answer := health(port))[0] == 503 and answer, timeout=10, message="a 503")
            assert list(body["error"]["details"]) == ["relay"]
            assert body["error"]["details"]["relay"].startswith("no sign of life for")
    finally:
        released.set()


# --- gunicorn's master ------------------------------------------------------------------------


@pytest.fixture
def web_master(tmp_path):
    """scheduling on SQLite under gunicorn with 2 worker processes and CLINIC_METRICS_PORT: (process,
    app port, metrics port). Its temporary files (the metrics directory) go under tmp_path."""
    sqlite_service_app("scheduling", tmp_path).extensions["clinic.engine"].dispose()  # migrates the database
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'scheduling.db'}", "CLINIC_VAR_DIR": str(tmp_path),
           "LOG_LEVEL": "WARNING", "CLINIC_METRICS_PORT": str(metrics_port), "TMPDIR": str(tmp_path)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with open(tmp_path / "gunicorn.log", "wb") as log:
        process = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c", "python:clinic.gunicorn_conf",
                                    "--bind", f"127.0.0.1:{port}", "--workers", "2", "scheduling.app:create_app()"],
                                   env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(metrics_port, 30, process, f"gunicorn's metrics port (log: {tmp_path / 'gunicorn.log'})")
            wait_for_port(port, 30, process, f"gunicorn (log: {tmp_path / 'gunicorn.log'})")
            yield process, port, metrics_port
        finally:
            stop_process_group(process)


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_the_web_master_adds_up_its_workers_metrics_and_answers_healthz_while_they_are_stopped(web_master, tmp_path):
    process, port, metrics_port = web_master
    workers = eventually(lambda: len(_children(process.pid)) == 2 and _children(process.pid), timeout=20, message="two workers")
    directory, = tmp_path.glob("clinic-metrics-*")
    sent = 0

    def both_workers_counted():
        nonlocal sent
        # A new connection each time, so either worker process may take it.
        assert get(port, "/healthz")[0] == 200
        sent += 1
        return {f"counter_{pid}.db" for pid in workers} <= {path.name for path in directory.iterdir()}

    eventually(both_workers_counted, timeout=30, interval=0.01, message="requests answered by both worker processes")

    status, body = get(metrics_port, "/metrics")
    assert status == 200
    assert value(body.decode(), "clinic_http_requests_total", service="scheduling", route="/healthz", status="200") == sent
    # A worker's own /metrics on the app port adds up the same files.
    assert value(get(port, "/metrics")[1].decode(), "clinic_http_requests_total", route="/healthz") == sent

    # Every request thread of every worker stopped: the app port cannot answer, the master still does.
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        assert health(metrics_port) == (200, {"status": "ok"})
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        with pytest.raises(TimeoutError):
            connection.request("GET", "/healthz")
            connection.getresponse()
        connection.close()
        assert value(get(metrics_port, "/metrics")[1].decode(), "clinic_http_requests_total", route="/healthz") == sent
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)

    stop_process_group(process)
    assert process.returncode == 0
    assert not directory.exists(), "the metrics directory outlived the server"
