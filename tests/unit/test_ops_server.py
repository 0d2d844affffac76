"""The ops port (clinic.ops), the web app's request metrics and /metrics, the jobs loop's beat, how
long each of a worker's loops may be silent, and `clinic outbox status` on SQLite. The worker's
health on the real broker, and gunicorn's master, are in tests/integration/test_metrics.py."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from clinic import metrics
from clinic.bus import BLOCKED_CONNECTION_TIMEOUT_SECONDS
from clinic.config import ConfigurationError, load_settings
from clinic.db import create_engine, messaging_tables, new_id
from clinic.ops import OpsServer, outbox_status
from clinic.testing import eventually
from clinic.testing.service_apps import sqlite_service_app, staff_token
from clinic.worker import STUCK_AFTER_SECONDS, Job, Worker, _Jobs, stuck_after
from tests.support import probe


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as refused:
        return refused.code, dict(refused.headers), refused.read()


def samples(text: str, name: str, **labels) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()))


@pytest.fixture
def ops():
    servers = []

    def start(stuck=dict) -> OpsServer:
        server = OpsServer(0, stuck, host="127.0.0.1").start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_healthz_is_ok_while_nothing_is_stuck_and_503_naming_what_is(ops):
    stuck = {}
    server = ops(lambda: dict(stuck))
    status, headers, body = get(server.port, "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert headers["Content-Type"] == "application/json"

    stuck["relay"] = "no sign of life for 42 s"
    status, _, body = get(server.port, "/healthz")
    error = json.loads(body)["error"]
    assert status == 503
    assert (error["code"], error["details"]) == ("stuck", {"relay": "no sign of life for 42 s"})
    assert "relay" in error["message"]


def test_every_answer_of_the_ops_port_carries_the_app_port_s_browser_headers(ops):
    stuck = {}
    server = ops(lambda: dict(stuck))
    answers = {"metrics": get(server.port, "/metrics"), "health": get(server.port, "/healthz"),
               "no such path": get(server.port, "/nothing"), "metrics, HEAD": get(server.port, "/metrics", "HEAD")}
    stuck["relay"] = "no sign of life for 42 s"
    answers["stuck"] = get(server.port, "/healthz")
    for kind, (status, headers, _) in answers.items():
        assert headers.get("Cache-Control") == "no-store", (kind, status)
        assert headers.get("X-Content-Type-Options") == "nosniff", (kind, status)
        assert headers.get("Referrer-Policy") == "no-referrer", (kind, status)
        policy = headers.get("Content-Security-Policy", "")
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, (kind, status, policy)


def test_a_health_check_that_cannot_tell_is_a_503_naming_the_error_class_only(ops):
    def broken():
        raise RuntimeError("Maria Silva")

    status, _, body = get(ops(broken).port, "/healthz")
    assert status == 503
    assert "RuntimeError" in body.decode() and "Maria" not in body.decode()


def test_metrics_are_the_process_s_prometheus_text_and_other_paths_are_404(ops):
    server = ops()
    metrics.RELAY_PUBLISHED.labels("ops-test").inc(3)
    status, headers, body = get(server.port, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert samples(body.decode(), "clinic_relay_published_total", service="ops-test") == 3
    status, _, body = get(server.port, "/metrics", method="HEAD")
    assert (status, body) == (200, b"")
    status, _, body = get(server.port, "/patients")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"


def test_a_port_in_use_fails_when_the_server_is_made(ops):
    server = ops()
    with pytest.raises(OSError):
        OpsServer(server.port, host="127.0.0.1")


# --- the web app -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scheduling(tmp_path_factory):
    app = sqlite_service_app("scheduling", tmp_path_factory.mktemp("metrics"))
    client = app.test_client()
    client.headers = {"Authorization": f"Bearer {staff_token(app)}"}
    return client


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_requests_are_counted_by_route_template_method_and_status_never_by_path(scheduling):
    room = "7b1f3a52-1111-4a4a-9c9c-2d2d2d2d2d2d"
    before = scrape(scheduling)
    assert scheduling.get(f"/rooms/{room}", headers=scheduling.headers).status_code == 404
    assert scheduling.get("/no/such/place/Maria").status_code == 404
    assert scheduling.get("/rooms", headers=scheduling.headers).status_code == 200
    after = scrape(scheduling)

    def grew(name, **labels):
        return samples(after, name, service="scheduling", **labels) - samples(before, name, service="scheduling", **labels)

    assert grew("clinic_http_requests_total", route="/rooms/<uuid:room_id>", method="GET", status="404") == 1
    assert grew("clinic_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert grew("clinic_http_requests_total", route="/rooms", method="GET", status="200") == 1
    assert grew("clinic_http_request_duration_seconds_count", route="/rooms", method="GET") == 1
    assert room not in after and "Maria" not in after


def test_a_method_nobody_knows_is_counted_as_other(scheduling):
    before = scrape(scheduling)
    assert scheduling.open("/rooms", method="BREW").status_code == 405
    # No route takes BREW, so none matched.
    labels = {"service": "scheduling", "route": "unmatched", "method": "other", "status": "405"}
    counted = samples(scrape(scheduling), "clinic_http_requests_total", **labels)
    assert counted == samples(before, "clinic_http_requests_total", **labels) + 1


def test_a_database_away_answers_503_and_is_counted(scheduling, tmp_path):
    from clinic.localservers import free_port

    app = scheduling.application
    working = app.extensions["clinic.engine"]
    # Nothing listens there: the connection is refused at once.
    app.extensions["clinic.engine"] = create_engine(f"postgresql://clinic@127.0.0.1:{free_port()}/nowhere")
    try:
        before = scrape(scheduling)
        response = scheduling.get("/rooms", headers=scheduling.headers)
        assert response.status_code == 503 and response.get_json()["error"]["code"] == "database_unavailable"
        after = scrape(scheduling)
    finally:
        app.extensions["clinic.engine"].dispose()
        app.extensions["clinic.engine"] = working
    assert samples(after, "clinic_database_unavailable_total", service="scheduling") == \
        samples(before, "clinic_database_unavailable_total", service="scheduling") + 1
    assert samples(after, "clinic_http_requests_total", service="scheduling", route="/rooms", status="503") == \
        samples(before, "clinic_http_requests_total", service="scheduling", route="/rooms", status="503") + 1


def test_metrics_is_no_operation_of_the_api(scheduling):
    assert "/metrics" not in scheduling.get("/openapi.json").get_json()["paths"]
    assert all(rule.rule != "/metrics" for rule in scheduling.application.url_map.iter_rules())
    refused = scheduling.post("/metrics")
    assert refused.status_code == 405 and refused.headers["Allow"] == "GET, HEAD"
    assert refused.get_json()["error"]["code"] == "method_not_allowed"


# --- the jobs loop's beat ----------------------------------------------------------------------


def _jobs(tmp_path, *jobs: Job) -> _Jobs:
    metadata = sa.MetaData()
    messaging_tables(metadata)
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    metadata.create_all(engine)
    return _Jobs(load_settings("sessions", env={}), engine, metadata, jobs, clock=lambda: datetime.now(timezone.utc))


def test_the_jobs_loop_beats_every_second_between_rare_runs_and_allows_a_long_job_its_time(tmp_path):
    release = threading.Event()
    started = threading.Event()

    def slow(_uow):
        started.set()
        release.wait(10)

    runner = _jobs(tmp_path, Job("hourly", timedelta(hours=1), lambda uow: None),
                   Job("slow mail", timedelta(hours=1), slow, longest=timedelta(minutes=5)))
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        assert started.wait(5)
        silent, allowed = runner.silent_for()
        assert allowed == 300, "a job with a longest of its own is allowed it while it runs"
        release.set()
        first = runner.last_beat
        eventually(lambda: runner.last_beat > first + 1, timeout=5, message="a beat a second after the runs")
        assert runner.silent_for()[1] == STUCK_AFTER_SECONDS
        assert runner.silent_for()[0] < 1.5
    finally:
        release.set()
        runner.stop()
        thread.join(5)


# --- clinic outbox status ----------------------------------------------------------------------


def test_outbox_status_prints_the_backlog_and_the_oldest_unpublished_row(tmp_path):
    metadata = sa.MetaData()
    outbox, _ = messaging_tables(metadata)
    url = f"sqlite:///{tmp_path / 'records.db'}"
    engine = create_engine(url)
    metadata.create_all(engine)
    an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    with engine.begin() as connection:
        for minutes, published in ((0, True), (10, False), (20, False)):
            connection.execute(outbox.insert(), {"event_id": new_id(), "event_type": "records.patient.registered", "body": "{}",
                                                 "created_at": an_hour_ago + timedelta(minutes=minutes),
                                                 "published_at": an_hour_ago if published else None, "attempts": 0})
    engine.dispose()

    lines = []
    rows = outbox_status(["records"], env={"DATABASE_URL": url}, out=lines.append)
    assert [row["unpublished"] for row in rows] == [2]
    assert 49 * 60 < rows[0]["oldest_age_seconds"] < 51 * 60
    assert lines == ["records: 2 unpublished, the oldest 50 min old"]


def test_outbox_status_names_a_database_it_cannot_read_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINIC_VAR_DIR", str(tmp_path))
    empty = create_engine(f"sqlite:///{tmp_path / 'sessions.db'}")
    with empty.begin() as connection:
        connection.execute(sa.text("CREATE TABLE unrelated (id INTEGER)"))
    empty.dispose()
    lines = []
    rows = outbox_status(["scheduling", "sessions"], env={}, out=lines.append)
    assert [row["problem"] for row in rows] == ["no database yet (clinic migrate makes it)", "could not read its outbox (OperationalError)"]
    assert not (tmp_path / "scheduling.db").exists(), "asking must not create a database"
    assert lines[0].startswith("scheduling: no database yet")


def test_outbox_status_with_one_database_url_asks_for_one_service():
    with pytest.raises(ConfigurationError):
        outbox_status(["scheduling", "records"], env={"DATABASE_URL": "sqlite:///x.db"}, out=lambda line: None)


def test_a_loop_waiting_on_the_database_is_not_called_stuck():
    assert STUCK_AFTER_SECONDS > 2 * load_settings("records", env={}).database_deadline_seconds


def test_a_consumer_waiting_on_a_slow_or_blocked_broker_is_not_called_stuck():
    # A call on the consumer's blocking connection may wait until pika's heartbeat check gives up on a
    # broker that stopped answering (up to 2 × (heartbeat + 5) s), or until a blocked publish times out.
    for heartbeat in ("30", "60", "5"):
        settings = load_settings("records", env={"CLINIC_BROKER_HEARTBEAT_SECONDS": heartbeat})
        assert stuck_after(settings) > 2 * (settings.broker_heartbeat_seconds + 5) + BLOCKED_CONNECTION_TIMEOUT_SECONDS
        assert stuck_after(settings) >= STUCK_AFTER_SECONDS


def test_the_consumer_is_allowed_its_broker_wait_and_the_relay_and_jobs_are_not(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'probe.db'}")
    probe.metadata.create_all(engine)
    settings = load_settings("probe", env={})
    worker = Worker(settings, probe.metadata, probe.HANDLERS, engine=engine, jobs=[Job("tick", timedelta(hours=1), lambda uow: None)])
    # As run() records them, without a broker: the loops started, and how long ago each last beat.
    worker._started.update({"consumer", "relay", "jobs"})
    now = time.monotonic()
    worker.consumer.last_beat = now - (STUCK_AFTER_SECONDS + 30)
    worker.relay.last_beat = worker.jobs.last_beat = now
    assert worker.stuck() == {}, "a consumer waiting on the broker is called stuck"
    worker.consumer.last_beat = now - (stuck_after(settings) + 5)
    worker.relay.last_beat = worker.jobs.last_beat = now - (STUCK_AFTER_SECONDS + 5)
    assert set(worker.stuck()) == {"consumer", "relay", "jobs"}
    engine.dispose()


def test_the_worker_s_metrics_port_listens_on_every_address_unless_told_otherwise():
    assert load_settings("records", env={}).metrics_host == "0.0.0.0"
    assert load_settings("records", env={"CLINIC_METRICS_HOST": "127.0.0.1"}).metrics_host == "127.0.0.1"
