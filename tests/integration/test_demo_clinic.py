"""The demo clinic `make run` seeds, with real processes: run_local (its own RabbitMQ, the four services on
SQLite in a var directory of the test's own, every port moved by CLINIC_PORT_OFFSET) seeds it through the
apps' HTTP APIs once they answer, says so in its banner, and starts the simulated monitors.

The seeded clinic has what the README says; with today's marker, `clinic seed-demo` does nothing; on a
later day (the marker's time moved back a day) it seeds again and makes nothing twice; the simulated monitor's readings are stored under the
running session, and a deterioration raises an alert.
"""

from __future__ import annotations

import json
import random
import stat
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests

from clinic.auth import issue_token
from clinic.config import load_demo_settings, load_settings
from clinic.demo import INFUSION_ROOMS, PATIENTS, WEEKDAYS, marker_path, monitors_path, read_monitors, seeded_today, write_private
from clinic.monitors import Simulator
from clinic.testing import eventually
from tests.integration.test_run_local import _make_run

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def demo_clinic(tmp_path):
    with _make_run(tmp_path, demo=True) as clinic:
        yield clinic


class Staff:
    """Calls to the running clinic with a development token of one role."""

    def __init__(self, clinic):
        self.clinic = clinic

    def get(self, service: str, role: str, path: str, **query):
        settings = load_settings(service, env={"CLINIC_VAR_DIR": str(self.clinic.var)})
        response = requests.get(self.clinic.app(service) + path, params=query, timeout=10,
                                headers={"Authorization": f"Bearer {issue_token(settings, 'test-' + role, [role])}"})
        assert response.status_code == 200, response.text
        return response.json()


def _what_is_there(staff: Staff, today: str) -> dict:
    """Everything the seed makes, by id: a second seed must leave it exactly so."""
    rooms = staff.get("scheduling", "admin", "/rooms")
    patients = [found for patient, *_ in PATIENTS
                for found in staff.get("records", "front_desk", "/patients", family_name=patient["family_name"])]
    return {
        "rooms": sorted(room["id"] for room in rooms),
        "patients": sorted(patient["id"] for patient in patients),
        "diagnoses": sorted(d["id"] for p in patients for d in staff.get("records", "neurologist", f"/patients/{p['id']}/diagnoses")),
        "plans": sorted((plan["id"], plan["status"]) for p in patients
                        for plan in staff.get("records", "neurologist", f"/patients/{p['id']}/treatment-plans")),
        "appointments": sorted((a["id"], a["status"]) for a in staff.get("scheduling", "front_desk", "/appointments", date=today)),
        "devices": sorted(d["id"] for d in staff.get("sessions", "admin", "/devices", active="true")),
        "sessions": sorted((s["id"], s["status"]) for s in staff.get("sessions", "nurse", "/sessions")),
    }


def test_make_run_seeds_the_demo_clinic_once_and_its_monitors_post_vital_signs(demo_clinic):
    clinic, staff = demo_clinic, Staff(demo_clinic)
    eventually(lambda: "demo clinic: seeded now" in clinic.terminal(), timeout=240, interval=0.5,
               message=f"the banner to say the demo was seeded; the terminal:\n{clinic.terminal()}")
    assert "CLINIC_DEMO=off turns the demo off" in clinic.terminal()
    settings = load_demo_settings(clinic.env)
    today = datetime.now(ZoneInfo(load_settings("cli", clinic.env).clinic_timezone)).date().isoformat()

    # What the README says the demo holds.
    rooms = {room["name"]: room for room in staff.get("scheduling", "admin", "/rooms")}
    assert {name: room["kind"] for name, room in rooms.items()} == {
        "Infusion 1": "infusion", "Infusion 2": "infusion", "Infusion 3": "infusion", "Exam A": "exam", "Exam B": "exam"}
    hours = staff.get("scheduling", "admin", "/office-hours")
    assert all(hours[day] == [{"opens": "00:00", "closes": "23:59"}] for day in WEEKDAYS)
    for patient, diagnosis, plan, _ in PATIENTS:
        [found] = staff.get("records", "front_desk", "/patients", family_name=patient["family_name"])
        assert staff.get("records", "front_desk", f"/patients/{found['id']}")["email"].endswith("@example.org")
        assert [d["code"] for d in staff.get("records", "neurologist", f"/patients/{found['id']}/diagnoses")] == [diagnosis["code"]]
        [active] = staff.get("records", "neurologist", f"/patients/{found['id']}/treatment-plans")
        assert active["status"] == "active" and active["infusion_minutes"] == plan["infusion_minutes"]
    statuses = sorted((a["kind"], a["status"]) for a in staff.get("scheduling", "front_desk", "/appointments", date=today))
    assert statuses == [("follow_up", "booked"), ("infusion", "booked"), ("infusion", "checked_in"), ("infusion", "in_progress")]
    board = {room["name"]: room for room in staff.get("sessions", "nurse", "/board")["rooms"]}
    assert board["Infusion 1"]["session"]["status"] == "started"
    assert board["Infusion 2"]["session"]["status"] == "waiting"
    assert all(board[name]["monitored"] for name in INFUSION_ROOMS)
    monitors = read_monitors(monitors_path(settings))
    assert sorted(monitor["room_name"] for monitor in monitors) == list(INFUSION_ROOMS)
    assert stat.S_IMODE(monitors_path(settings).stat().st_mode) == 0o600

    # The simulated monitor's readings are stored under the running session.
    running = board["Infusion 1"]["session"]["id"]
    eventually(lambda: len(staff.get("sessions", "nurse", f"/sessions/{running}/vitals")) >= 2, timeout=30,
               message="two readings of the simulated monitor in the running session")

    # With today's marker, a second seed does nothing; with an earlier day's, it runs again (topping up
    # today's appointments) and makes nothing twice.
    before = _what_is_there(staff, today)
    again = subprocess.run([str(BIN / "clinic"), "seed-demo"], env=clinic.env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr
    marker = json.loads(marker_path(settings).read_text())
    write_private(marker_path(settings), {**marker, "seeded_at": (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()})
    again = subprocess.run([str(BIN / "clinic"), "seed-demo"], env=clinic.env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0 and "demo clinic seeded" in again.stdout, again.stderr
    assert seeded_today(settings, clinic.env)
    assert _what_is_there(staff, today) == before
    assert sorted(m["device_id"] for m in read_monitors(monitors_path(settings))) == sorted(m["device_id"] for m in monitors)

    # A deterioration raises an alert: a simulator of the test's own, deteriorating after two readings.
    assert staff.get("sessions", "nurse", "/alerts", session_id=running, kind="news2") == []
    stop = threading.Event()
    simulator = Simulator(settings, every=1.0, rng=random.Random(14), deteriorate_after=(2, 2))
    thread = threading.Thread(target=simulator.run, args=(stop,), daemon=True)
    thread.start()
    try:
        alerts = eventually(lambda: staff.get("sessions", "nurse", "/alerts", session_id=running, kind="news2"), timeout=60,
                            message="an alert raised by the simulated deterioration")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert alerts[0]["level"] in ("urgent", "emergency")
