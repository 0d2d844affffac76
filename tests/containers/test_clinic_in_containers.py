"""The clinic in containers, as ops deploy it: the images built from deploy/ (deploy/images/build.sh), the
compose file started with them, every health check passing, and one patient driven over HTTP only, from
registration to the confirmation email in the mail sink. Then a worker container is stopped mid-stream
(SIGTERM, as `docker stop` and Kubernetes do) and started again: every booking's email arrives exactly once.

The run takes minutes, most of it the first image build; it is a target of its own (`make test` runs it
after the unit and integration tests). Its timings are printed at the end under "clinic in containers".
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
import requests

from clinic.config import SERVICES
from clinic.testing import eventually
from tests.containers.conftest import note, took
from tests.containers.engine import STOP_TIMEOUT, ComposeClinic, build_images, compose_clinic, container_engine
from tests.support.staff import StaffClient

WAIT = 60  # seconds for anything that crosses the bus between containers
STREAM = 12  # patients booked while the notifications worker is stopped and started again
KETOROLAC = {"name": "ketorolac", "dose": "30", "unit": "mg", "route": "IV", "purpose": "pain", "max_per_24h": "120"}
# Generous limits: the test drives every service from one address.
SERVICE_ENV = {
    "CLINIC_TIMEZONE": "Etc/UTC",
    "CLINIC_RATE_LIMIT_PER_ADDRESS": "100000/minute",
    "CLINIC_RATE_LIMIT_PER_SUBJECT": "100000/minute",
}


@pytest.fixture(scope="module")
def clinic(tmp_path_factory, request):
    engine = container_engine()
    began = time.monotonic()
    build_images(engine)
    took(f"images built with {engine.name} (deploy/images/build.sh)", time.monotonic() - began)
    note("identity provider: Keycloak's image cannot be had without a registry here, so the services trusted the "
         "development issuer instead (CLINIC_ENV=test, its public keys mounted into each container)")
    timings: dict[str, float] = {}
    with compose_clinic(engine, tmp_path_factory.mktemp("compose"), SERVICE_ENV, timings) as running:
        for name, seconds in timings.items():
            took(name, seconds)
        failed_before = request.session.testsfailed
        yield running
        if request.session.testsfailed > failed_before:
            running.print_logs()


class Staff(StaffClient):
    """The staff apps: one development token per role, good for every service."""

    PEOPLE = {"desk": ("desk-rosa", "front_desk"), "neurologist": ("dr-lee", "neurologist"), "admin": ("admin-kim", "admin")}

    def __init__(self, clinic: ComposeClinic):
        super().__init__(clinic.url, clinic.token_settings, self.PEOPLE, [f"clinic-{service}" for service in SERVICES],
                         timeout=30)


def open_the_clinic(staff: Staff) -> dict:
    week = {day: [{"opens": "06:00", "closes": "20:00"}] for day in
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")}
    staff.ok("admin", "PUT", "scheduling", "/office-hours", json=week)
    return staff.ok("admin", "POST", "scheduling", "/rooms", 201, json={"name": "Infusion 1", "kind": "infusion"})


def patient_with_a_plan(staff: Staff, number: int) -> str:
    """Registered, diagnosed, with a plan a neurologist put in force: ready to book."""
    patient = staff.ok("desk", "POST", "records", "/patients", 201, json={
        "given_name": "Ana", "family_name": f"Moreno{chr(ord('a') + number % 26)}", "birth_date": "1980-02-03",
        "sex": "female", "email": f"patient{number}@example.org"})
    staff.ok("neurologist", "POST", "records", f"/patients/{patient['id']}/diagnoses", 201, json={
        "code": "G43.709", "description": "Chronic migraine without aura, not intractable", "onset_date": "2019-03-01"})
    plan = staff.ok("neurologist", "POST", "records", f"/patients/{patient['id']}/treatment-plans", 201, json={
        "infusion_minutes": 120, "drugs": [KETOROLAC]})
    staff.ok("neurologist", "POST", "records", f"/treatment-plans/{plan['id']}/activate")
    return patient["id"]


def book(staff: Staff, patient_id: str, room: dict, starts_at: datetime) -> dict:
    """An infusion, once scheduling holds its copy of the patient's plan (it sizes the infusion)."""
    window = {"patient_id": patient_id, "kind": "infusion", "from": starts_at.isoformat(),
              "to": (starts_at + timedelta(hours=4)).isoformat(), "room_id": room["id"]}
    eventually(lambda: staff.call("desk", "GET", "scheduling", "/availability", params=window).status_code == 200,
               timeout=WAIT, interval=0.3, message="scheduling's copy of the plan (availability answers 200)")
    return staff.ok("desk", "POST", "scheduling", "/appointments", 201, json={
        "patient_id": patient_id, "kind": "infusion", "starts_at": starts_at.isoformat(), "room_id": room["id"]})


def booked_emails(clinic: ComposeClinic) -> Counter:
    """Confirmation emails in the mail sink, by recipient."""
    return Counter(str(message["To"].addresses[0].addr_spec) for message in clinic.mail()
                   if message["Subject"].strip().startswith("Your infusion is booked"))


def morning(days_ahead: int) -> datetime:
    day = datetime.now(timezone.utc).date() + timedelta(days=days_ahead)
    return datetime(day.year, day.month, day.day, 7, 0, tzinfo=timezone.utc)


def test_every_container_is_healthy_and_runs_as_its_own_database_role(clinic):
    for service in SERVICES:
        for part in ("web", "worker"):
            assert clinic.healthy(f"{service}-{part}"), clinic.logs(f"{service}-{part}")
        answer = requests.get(clinic.url(service) + "/readyz", timeout=10)
        assert answer.status_code == 200, answer.text


def test_one_patient_from_registration_to_the_confirmation_email(clinic):
    began = time.monotonic()
    staff = Staff(clinic)
    room = open_the_clinic(staff)
    patient_id = patient_with_a_plan(staff, 0)
    appointment = book(staff, patient_id, room, morning(1))
    assert appointment["status"] == "booked"

    def arrived():
        found = booked_emails(clinic)
        assert found.get("patient0@example.org"), f"the mail sink holds {[m['Subject'] for m in clinic.mail()]}"
        return found
    assert eventually(arrived, timeout=WAIT, interval=0.5, message="the confirmation email") == {"patient0@example.org": 1}
    [message] = [m for m in clinic.mail() if m["To"].addresses[0].addr_spec == "patient0@example.org"]
    assert "Moreno" not in message["Subject"]
    took("one patient: register, plan, activate, book, confirmation email", time.monotonic() - began)


def test_a_worker_stopped_mid_stream_loses_and_doubles_nothing(clinic):
    """The front desk books a stream of infusions; the notifications worker is stopped (SIGTERM) while the
    first confirmations go out, the rest are booked while it is down, and it is started again."""
    began = time.monotonic()
    staff = Staff(clinic)
    [room] = [r for r in staff.ok("admin", "GET", "scheduling", "/rooms") if r["name"] == "Infusion 1"] or [open_the_clinic(staff)]
    patients = [patient_with_a_plan(staff, number) for number in range(1, STREAM + 1)]
    before = booked_emails(clinic)
    logged_before = len(staff.ok("admin", "GET", "notifications", "/messages", params={"kind": "infusion_booked"}))
    first, rest = patients[:STREAM // 2], patients[STREAM // 2:]

    failures: list[BaseException] = []

    def front_desk():
        try:
            for day, patient_id in enumerate(first, start=2):
                book(staff, patient_id, room, morning(day))
        except BaseException as error:  # reported by the test below
            failures.append(error)
    desk = threading.Thread(target=front_desk)
    desk.start()
    eventually(lambda: sum((booked_emails(clinic) - before).values()) >= 1, timeout=WAIT, interval=0.1,
               message="the first confirmation of the stream")
    stopping = time.monotonic()
    clinic.stop("notifications-worker")
    stopped_in = time.monotonic() - stopping
    assert clinic.exit_code("notifications-worker") == 0, clinic.logs("notifications-worker")
    assert stopped_in < STOP_TIMEOUT, f"the worker took {stopped_in:.1f} s to stop: it was killed, not stopped"
    desk.join(timeout=WAIT * len(first))
    assert not desk.is_alive() and not failures, failures
    sent_while_running = sum((booked_emails(clinic) - before).values())
    # The rest of the day's bookings, while no worker sends mail: their events wait in the queue.
    for day, patient_id in enumerate(rest, start=2 + len(first)):
        book(staff, patient_id, room, morning(day))
    clinic.start("notifications-worker")

    expected = {f"patient{number}@example.org": 1 for number in range(1, STREAM + 1)}

    def all_arrived():
        found = booked_emails(clinic) - before
        assert set(found) >= set(expected), f"{len(found)} of {STREAM} arrived"
        return found
    assert eventually(all_arrived, timeout=WAIT * 2, interval=0.5, message="every confirmation") == expected
    # The mail log agrees: one sent message per booking of the stream.
    log = staff.ok("admin", "GET", "notifications", "/messages", params={"kind": "infusion_booked"})
    assert len(log) - logged_before == STREAM and all(message["status"] == "sent" for message in log), log
    took(f"worker stopped mid-stream ({sent_while_running} of {STREAM} sent before), started, every email once "
         f"(stopped in {stopped_in:.1f} s)", time.monotonic() - began)
