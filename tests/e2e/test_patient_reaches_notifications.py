"""End to end, as deployed: records under gunicorn, the records and notifications workers as their own
processes, each service on its own PostgreSQL database, events over the real RabbitMQ."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from clinic.auth import issue_token
from clinic.db import create_engine
from clinic.localservers import free_port, wait_for_port
from clinic.migrations import migrate
from clinic.testing import eventually
from clinic.testing.queues import queue_state

BIN = Path(sys.executable).parent


@pytest.fixture
def clinic_stack(postgres, settings_for, tmp_path):
    import notifications.db
    import records.db

    urls = {"records": postgres.create_database("records"), "notifications": postgres.create_database("notifications")}
    migrate(create_engine(urls["records"]), records.db.MIGRATIONS)
    migrate(create_engine(urls["notifications"]), notifications.db.MIGRATIONS)
    settings = settings_for("records", urls["records"])
    port = free_port()
    base_env = dict(os.environ, RABBITMQ_URL=settings.rabbitmq_url, CLINIC_BUS_NAMESPACE=settings.bus_namespace)
    commands = [
        ("records", [str(BIN / "gunicorn"), "-c", "python:clinic.gunicorn_conf", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                     "records.app:create_app()"]),
        ("records", [str(BIN / "records-worker")]),
        ("notifications", [str(BIN / "notifications-worker")]),
    ]
    processes = []
    for index, (service, command) in enumerate(commands):
        log = open(tmp_path / f"{index}-{service}.log", "wb")
        # Each service on its own broker account, as deployed.
        env = dict(base_env, DATABASE_URL=urls[service], RABBITMQ_URL=settings_for(service, urls[service]).rabbitmq_url)
        processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        wait_for_port(port, 30, processes[0], "records web")
        # Until a consumer has declared its queue, events it would bind to go to clinic.unrouted.
        eventually(lambda: queue_state(settings.rabbitmq_url, f"{settings.bus_namespace}.notifications").consumers > 0,
                   timeout=30, message="the notifications worker to consume its queue")
        yield {"base": f"http://127.0.0.1:{port}", "settings": settings, "urls": urls}
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                assert process.wait(timeout=20) == 0, "a process did not stop cleanly on SIGTERM"
            except subprocess.TimeoutExpired:
                process.kill()
                raise
        for url in urls.values():
            postgres.drop_database(url)


def test_a_registered_patient_reaches_the_notifications_contact_copy(clinic_stack):
    settings = clinic_stack["settings"]
    headers = {"Authorization": f"Bearer {issue_token(settings, 'desk-1', ['front_desk'])}",
               "X-Correlation-ID": "6c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5"}
    patient = {"given_name": "Noor", "family_name": "Haddad", "birth_date": "1990-07-21", "sex": "female",
               "email": "noor@example.org", "phone": "+1 555 010 0199", "preferred_contact": "sms"}

    response = requests.post(f"{clinic_stack['base']}/patients", json=patient, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    assert response.headers["X-Correlation-ID"] == "6c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5"
    patient_id = response.json()["id"]

    import notifications.db as notifications_db

    engine = create_engine(clinic_stack["urls"]["notifications"])

    def contact_copy():
        with engine.connect() as connection:
            return notifications_db.get_contact(connection, patient_id)

    copy = eventually(contact_copy, timeout=15, message="the contact copy in the notifications database")
    assert (copy["email"], copy["phone"], copy["preferred_contact"]) == ("noor@example.org", "+1 555 010 0199", "sms")

    change = requests.patch(f"{clinic_stack['base']}/patients/{patient_id}", json={"email_opt_out": True}, headers=headers, timeout=10)
    assert change.status_code == 200, change.text
    eventually(lambda: contact_copy()["email_opt_out"] is True, timeout=15, message="the opt-out to reach notifications")
    engine.dispose()

    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert requests.get(clinic_stack["base"] + path, timeout=5).status_code == 200
