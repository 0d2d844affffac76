"""The demo clinic `make run` seeds on its first start (`clinic seed-demo`), through the same HTTP APIs
the staff apps use, with development tokens for each service's audience.

What it holds (the README says the same): five rooms (Infusion 1-3 with a bedside monitor each, Exam A
and B), office hours from 00:00 to 23:59 every day (so that the demo books today whenever it is
started), five patients (emails @example.org) each with a diagnosis and an active infusion plan, and
today's appointments: Amelia Hart's infusion started in Infusion 1, Daniel Okafor checked in for
Infusion 2, Sofia Marin booked later in Infusion 3, Grace Lindqvist's return visit in Exam A. Marcus Bell
has a plan and no appointment, for the walkthrough to book. An appointment that no longer fits in the
day (a demo started late in the evening) is left out, and the summary says which.

Every step looks before it writes (a room or a patient that exists answers 409 naming it; a
diagnosis, a plan, an appointment, a check-in or a monitor already there is used), so a seed cut short
is finished by the next start and nothing is made twice. The marker CLINIC_VAR_DIR/demo/seeded is
written last, with the time of the seed: on the same day make run seeds nothing more; on a later day
the seed runs again and so tops up today's appointments, check-in and running infusion (the demo
patients' sessions an earlier day left open are aborted first: a room holds one started session).
Monitor tokens are kept in
CLINIC_VAR_DIR/demo/monitors.json (owner only) for the simulator (clinic.monitors).

Where another service must hear of something first (scheduling's copy of a plan before booking,
sessions' copy of a room before its monitor, the session that a check-in opens), it polls that
service's API for a bounded time. Nothing here reads or logs patient data beyond what it sent.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from clinic.auth import ADMIN, FRONT_DESK, NEUROLOGIST, NURSE, issue_token
from clinic.config import DemoSettings, load_settings
from clinic.files import write_atomically


class DemoError(RuntimeError):
    """The demo could not be seeded (an app refused or never answered); the next start tries again."""


class Unreachable(DemoError):
    """An app did not answer at all (not started yet, or restarting)."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict
    body: object


def http(method: str, url: str, body: dict | None = None, token: str | None = None, timeout: float = 10.0) -> Answer:
    """One JSON request; any HTTP status is an Answer, no answer at all is Unreachable."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, dict(exc.headers or {}), exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise Unreachable(f"{method} {urllib.parse.urlsplit(url).netloc} did not answer ({type(exc).__name__})") from None
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    return Answer(status, headers, parsed)


def demo_dir(settings: DemoSettings) -> Path:
    return settings.var_dir / "demo"


def marker_path(settings: DemoSettings) -> Path:
    return demo_dir(settings) / "seeded"


def monitors_path(settings: DemoSettings) -> Path:
    return demo_dir(settings) / "monitors.json"


def write_private(path: Path, document) -> None:
    """Write JSON readable by its owner only (it holds device tokens), all at once."""
    write_atomically(path, json.dumps(document, indent=2))


def seeded_today(settings: DemoSettings, env, now: datetime | None = None) -> bool:
    """The marker says the seed ran on the clinic's today (its local date): nothing to seed. False
    without a readable marker, and on a later day, when the seed tops up today's appointments."""
    try:
        seeded_at = datetime.fromisoformat(json.loads(marker_path(settings).read_text())["seeded_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    local = load_settings("cli", env).timezone
    return seeded_at.astimezone(local).date() == (now or datetime.now(timezone.utc)).astimezone(local).date()


def read_monitors(path: Path) -> list[dict]:
    """The monitors the seed registered: [{device_id, room_id, room_name, token}]; none before the seed."""
    try:
        return json.loads(path.read_text())["monitors"]
    except (OSError, ValueError, KeyError, TypeError):
        return []


# The clinic the demo seeds.
INFUSION_ROOMS = ("Infusion 1", "Infusion 2", "Infusion 3")
EXAM_ROOMS = ("Exam A", "Exam B")
WHOLE_DAY = [{"opens": "00:00", "closes": "23:59"}]
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _drug(name, dose, unit, purpose, max_per_24h=None, rate=None, route="IV") -> dict:
    return {"name": name, "dose": dose, "unit": unit, "route": route, "purpose": purpose, "rate": rate,
            "max_per_24h": max_per_24h}


SALINE = _drug("sodium chloride 0.9%", "1", "L", "hydration", "2", rate="500 mL/h")

# (patient, diagnosis, plan, today): today is (what happens today, room) or None.
PATIENTS = (
    ({"given_name": "Amelia", "family_name": "Hart", "birth_date": "1984-03-12", "sex": "female",
      "email": "amelia.hart@example.org", "phone": "+1 555 010 0101"},
     {"code": "G43.719", "description": "Chronic migraine without aura, intractable, without status migrainosus",
      "onset_date": "2019-06-01"},
     {"infusion_minutes": 180, "notes": "Outpatient DHE protocol: anti-emetic and diphenhydramine 30 minutes before DHE.",
      "drugs": [_drug("dihydroergotamine mesylate", "1", "mg", "pain", "3"),
                _drug("metoclopramide", "10", "mg", "nausea_vomiting", "30"),
                _drug("diphenhydramine", "25", "mg", "other", "50"), SALINE]},
     ("running", "Infusion 1")),
    ({"given_name": "Daniel", "family_name": "Okafor", "birth_date": "1979-11-02", "sex": "male",
      "email": "daniel.okafor@example.org", "phone": "+1 555 010 0102"},
     {"code": "G44.41", "description": "Drug-induced headache, not elsewhere classified, intractable (medication overuse)",
      "onset_date": "2022-01-15"},
     {"infusion_minutes": 150, "notes": "Bridge therapy during withdrawal of daily analgesics.",
      "drugs": [_drug("ketorolac tromethamine", "30", "mg", "pain", "60"),
                _drug("ondansetron", "4", "mg", "nausea_vomiting", "16"),
                _drug("magnesium sulfate", "1", "g", "pain", "2", rate="4 g/h"),
                _drug("dexamethasone", "10", "mg", "prevention", "10")]},
     ("checked_in", "Infusion 2")),
    ({"given_name": "Sofia", "family_name": "Marin", "birth_date": "1991-07-23", "sex": "female",
      "email": "sofia.marin@example.org", "preferred_contact": "sms", "phone": "+1 555 010 0103"},
     {"code": "G43.119", "description": "Migraine with aura, intractable, without status migrainosus",
      "onset_date": "2016-09-01"},
     {"infusion_minutes": 120, "notes": "Valproate infusion; pregnancy test negative this month.",
      "drugs": [_drug("valproate sodium", "500", "mg", "pain", "1000"),
                _drug("metoclopramide", "10", "mg", "nausea_vomiting", "30"), SALINE]},
     ("booked", "Infusion 3")),
    ({"given_name": "Grace", "family_name": "Lindqvist", "birth_date": "1968-01-30", "sex": "female",
      "email": "grace.lindqvist@example.org"},
     {"code": "G43.709", "description": "Chronic migraine without aura, not intractable, without status migrainosus",
      "onset_date": "2010-04-20"},
     {"infusion_minutes": 120, "notes": None,
      "drugs": [_drug("magnesium sulfate", "2", "g", "pain", "4", rate="4 g/h"),
                _drug("prochlorperazine", "10", "mg", "nausea_vomiting", "20"),
                _drug("diphenhydramine", "25", "mg", "other", "50")]},
     ("follow_up", "Exam A")),
    ({"given_name": "Marcus", "family_name": "Bell", "birth_date": "1987-09-14", "sex": "male",
      "email": "marcus.bell@example.org"},
     {"code": "G43.019", "description": "Migraine without aura, intractable, without status migrainosus",
      "onset_date": "2020-02-10"},
     {"infusion_minutes": 180, "notes": None,
      "drugs": [_drug("dihydroergotamine mesylate", "0.5", "mg", "pain", "2"),
                _drug("ondansetron", "4", "mg", "nausea_vomiting", "8")]},
     None),
)
# How long after now each of today's appointments is looked for (the grid rounds up to the next slot).
LATER = {"running": 0, "checked_in": 0, "booked": 60, "follow_up": 30}


class Clinic:
    """The four apps, called with a development token of one role each (subject demo-<role>)."""

    def __init__(self, settings: DemoSettings, env, wait_seconds: float = 90.0):
        self.apps = dict(settings.apps)
        self.wait_seconds = wait_seconds
        self._tokens: dict[tuple[str, str], str] = {}
        self._env = env

    def token(self, service: str, role: str) -> str:
        if (service, role) not in self._tokens:
            settings = load_settings(service, self._env)
            # An hour is plenty for a seed; a shorter CLINIC_TOKEN_MAX_LIFETIME_MINUTES is obeyed.
            ttl = min(60, settings.token_max_lifetime_minutes)
            self._tokens[service, role] = issue_token(settings, f"demo-{role.replace('_', '-')}", [role], ttl_minutes=ttl)
        return self._tokens[service, role]

    def call(self, service: str, role: str, method: str, path: str, body=None, query: dict | None = None,
             expect=(200, 201)) -> Answer:
        url = self.apps[service] + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        answer = http(method, url, body, self.token(service, role))
        if answer.status not in expect:
            error = answer.body.get("error", {}) if isinstance(answer.body, dict) else {}
            raise DemoError(f"{service}: {method} {path} answered {answer.status} {error.get('code', '')}: "
                            f"{error.get('message', '')} {json.dumps(error.get('details', {}))}")
        return answer

    def until(self, what: str, check: Callable[[], object]):
        """check()'s first truthy answer, polled until wait_seconds have passed (an app restarting
        meanwhile is waited for too)."""
        deadline, trouble = time.monotonic() + self.wait_seconds, ""
        while True:
            try:
                found = check()
            except DemoError as exc:  # not answering, or answering 503 while it starts
                found, trouble = None, f" (last: {exc})"
            if found:
                return found
            if time.monotonic() > deadline:
                raise DemoError(f"gave up after {self.wait_seconds:.0f} s waiting for {what}{trouble}")
            time.sleep(0.5)


def seed(settings: DemoSettings, env=None, now: Callable[[], datetime] | None = None, wait_seconds: float = 90.0,
         say: Callable[[str], None] = print) -> dict:
    """Seed the demo clinic (each step only when not done yet) and write the marker: the summary."""
    env = os.environ if env is None else env
    now = now or (lambda: datetime.now(timezone.utc))
    clinic = Clinic(settings, env, wait_seconds)
    local = load_settings("cli", env).timezone
    clinic.until("the four apps to answer", lambda: all(
        http("GET", f"{url}/healthz", timeout=2).status == 200 for url in clinic.apps.values()))

    rooms = {name: _room(clinic, name, "infusion") for name in INFUSION_ROOMS}
    rooms |= {name: _room(clinic, name, "exam") for name in EXAM_ROOMS}
    clinic.call("scheduling", ADMIN, "PUT", "/office-hours", {day: WHOLE_DAY for day in WEEKDAYS})
    monitors = _monitors(clinic, settings, rooms)

    summary = {"rooms": len(rooms), "monitors": len(monitors), "patients": 0, "appointments_today": 0,
               "checked_in": 0, "sessions_started": 0, "did_not_fit_today": [], "ended_from_earlier_days": 0}
    left_open = _open_from_earlier_days(clinic, now().astimezone(local).date(), local)
    for patient, diagnosis, plan, today in PATIENTS:
        patient_id = _patient(clinic, patient)
        summary["ended_from_earlier_days"] += _end(clinic, [s for s in left_open if s["patient_id"] == patient_id])
        _diagnosis(clinic, patient_id, diagnosis)
        _active_plan(clinic, patient_id, plan)
        summary["patients"] += 1
        if today is None:
            continue
        what, room = today
        appointment = _appointment_today(clinic, patient_id, what, rooms[room], now(), local)
        if appointment is None:
            summary["did_not_fit_today"].append(f"{patient['given_name']} {patient['family_name']} ({what})")
            continue
        summary["appointments_today"] += 1
        if what in ("running", "checked_in"):
            _check_in(clinic, appointment)
            summary["checked_in"] += 1
            session = _session_of(clinic, appointment)
            if what == "running":
                _start(clinic, session)
                summary["sessions_started"] += 1
    write_private(marker_path(settings), {"seeded_at": now().isoformat(), **summary})
    say(f"demo clinic seeded: {describe(summary)}")
    return summary


def describe(summary: dict) -> str:
    line = (f"{summary['rooms']} rooms ({summary['monitors']} with a monitor), {summary['patients']} patients with active "
            f"plans, {summary['appointments_today']} appointments today ({summary['checked_in']} checked in, "
            f"{summary['sessions_started']} infusion running)")
    if summary.get("ended_from_earlier_days"):
        line += f"; {summary['ended_from_earlier_days']} session(s) an earlier day left open ended (aborted)"
    if summary.get("did_not_fit_today"):
        line += f"; too late in the day for: {', '.join(summary['did_not_fit_today'])}"
    return line


def _room(clinic: Clinic, name: str, kind: str) -> str:
    answer = clinic.call("scheduling", ADMIN, "POST", "/rooms", {"name": name, "kind": kind}, expect=(201, 409))
    return answer.body["id"] if answer.status == 201 else answer.body["error"]["details"]["room_id"]


def _patient(clinic: Clinic, patient: dict) -> str:
    answer = clinic.call("records", FRONT_DESK, "POST", "/patients", patient, expect=(201, 409))
    return answer.body["id"] if answer.status == 201 else answer.body["error"]["details"]["patient_id"]


def _diagnosis(clinic: Clinic, patient_id: str, diagnosis: dict) -> None:
    known = clinic.call("records", NEUROLOGIST, "GET", f"/patients/{patient_id}/diagnoses").body
    if not any(found["code"] == diagnosis["code"] for found in known):
        clinic.call("records", NEUROLOGIST, "POST", f"/patients/{patient_id}/diagnoses", diagnosis)


def _active_plan(clinic: Clinic, patient_id: str, plan: dict) -> str:
    """The patient's active plan: a draft left by an earlier seed is activated, else one is written."""
    plans = clinic.call("records", NEUROLOGIST, "GET", f"/patients/{patient_id}/treatment-plans").body
    active = [found for found in plans if found["status"] == "active"]
    if active:
        return active[0]["id"]
    drafts = [found for found in plans if found["status"] == "draft"]
    plan_id = drafts[0]["id"] if drafts else clinic.call(
        "records", NEUROLOGIST, "POST", f"/patients/{patient_id}/treatment-plans", plan).body["id"]
    clinic.call("records", NEUROLOGIST, "POST", f"/treatment-plans/{plan_id}/activate")
    return plan_id


def _appointment_today(clinic: Clinic, patient_id: str, what: str, room_id: str, now: datetime, local) -> dict | None:
    """The patient's appointment today (booked now in the first free slot when there is none yet), or None
    when none fits before the end of the day."""
    today = now.astimezone(local).date()
    booked = clinic.call("scheduling", FRONT_DESK, "GET", "/appointments",
                         query={"patient_id": patient_id, "date": today.isoformat()}).body
    booked = [found for found in booked if found["status"] not in ("cancelled", "no_show")]
    if booked:
        return booked[0]
    kind = "follow_up" if what == "follow_up" else "infusion"
    end_of_day = datetime.combine(today + timedelta(days=1), datetime.min.time(), local)
    query = {"patient_id": patient_id, "kind": kind, "room_id": room_id, "limit": 1,
             "from": (now + timedelta(minutes=LATER[what] + 1)).isoformat(), "to": end_of_day.isoformat()}

    def slots():
        # 422 until scheduling has heard of the patient's active plan (records.treatment_plan.activated).
        answer = clinic.call("scheduling", FRONT_DESK, "GET", "/availability", query=query, expect=(200, 422))
        return (answer.body,) if answer.status == 200 else None

    free = clinic.until("scheduling's copy of the treatment plan", slots)[0]
    if not free:
        return None
    return clinic.call("scheduling", FRONT_DESK, "POST", "/appointments",
                       {"patient_id": patient_id, "kind": kind, "starts_at": free[0]["starts_at"], "room_id": room_id}).body


def _open_from_earlier_days(clinic: Clinic, today, local) -> list[dict]:
    """Sessions checked in before today and still open (started or waiting): what an earlier day's seed,
    or its walkthrough, left behind."""
    found = [session for status in ("started", "waiting")
             for session in clinic.call("sessions", NURSE, "GET", "/sessions", query={"status": status, "limit": 500}).body]
    return [session for session in found if datetime.fromisoformat(session["checked_in_at"]).astimezone(local).date() < today]


def _end(clinic: Clinic, sessions: list[dict]) -> int:
    """Abort a demo patient's sessions of an earlier day: a room holds one started session, so today's
    infusion could not start beside yesterday's, and the room's monitor posts to today's. Patients the
    demo did not make are left alone. 409: it has ended meanwhile."""
    for session in sessions:
        clinic.call("sessions", NURSE, "POST", f"/sessions/{session['id']}/abort",
                    {"reason": "other", "note": "demo: left open on an earlier day"}, expect=(200, 409))
    return len(sessions)


def _check_in(clinic: Clinic, appointment: dict) -> None:
    if appointment["status"] == "booked":
        clinic.call("scheduling", FRONT_DESK, "POST", f"/appointments/{appointment['id']}/check-in")


def _session_of(clinic: Clinic, appointment: dict) -> dict:
    def opened():
        found = clinic.call("sessions", NURSE, "GET", "/sessions", query={"room_id": appointment["room_id"]}).body
        return next((session for session in found if session["appointment_id"] == appointment["id"]), None)

    return clinic.until("sessions to open the session of the check-in", opened)


def _start(clinic: Clinic, session: dict) -> None:
    if session["status"] == "waiting":
        clinic.call("sessions", NURSE, "POST", f"/sessions/{session['id']}/start")


def _monitors(clinic: Clinic, settings: DemoSettings, rooms: dict) -> list[dict]:
    """A monitor in each infusion room, its token kept in monitors.json. A monitor registered by a seed cut
    short before its token was kept is revoked and registered again (its token is shown only once)."""
    path = monitors_path(settings)
    kept = {monitor["device_id"]: monitor for monitor in read_monitors(path)}

    def known_to_sessions():
        board = clinic.call("sessions", NURSE, "GET", "/board").body
        return {room["room_id"] for room in board["rooms"]} >= {rooms[name] for name in INFUSION_ROOMS}

    clinic.until("sessions' copies of the infusion rooms", known_to_sessions)
    monitors = []
    for name in INFUSION_ROOMS:
        devices = clinic.call("sessions", ADMIN, "GET", "/devices", query={"room_id": rooms[name], "active": "true"}).body
        usable = [kept[device["id"]] for device in devices if device["id"] in kept]
        if usable:
            monitors.append(usable[0])
            continue
        for device in devices:
            clinic.call("sessions", ADMIN, "POST", f"/devices/{device['id']}/revoke")
        device = clinic.call("sessions", ADMIN, "POST", "/devices", {"room_id": rooms[name], "name": f"Monitor {name}"}).body
        monitors.append({"device_id": device["id"], "room_id": rooms[name], "room_name": name, "token": device["token"]})
        # Kept at once, with those of the rooms still to come: a seed cut short loses no token.
        write_private(path, {"monitors": list({monitor["device_id"]: monitor for monitor in [*monitors, *kept.values()]}.values())})
    write_private(path, {"monitors": monitors})
    return monitors
