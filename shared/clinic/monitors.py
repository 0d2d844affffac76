"""Simulated bedside monitors for the demo clinic (`clinic simulate-monitors`, which `make run` starts
after the seed and keeps running).

Each monitor the demo registered (CLINIC_VAR_DIR/demo/monitors.json, clinic.demo) posts one set of vital
signs every few seconds through POST /vitals with its own device token, as a real monitor does: sessions
files it under the started session in the monitor's room, and answers 409 while there is none (that
monitor then asks again every IDLE_SECONDS). Every few minutes the patient in a room deteriorates over
half a minute (blood pressure falls, heart rate and breathing rise, SpO2 dips) far enough for NEWS2 to
raise an alert, stays there a little, then recovers over the next minute.

It stays under the per-device rate limit (one post per monitor every `every` seconds: 12 a minute by
default, against CLINIC_RATE_LIMIT_PER_DEVICE's 120), waits what Retry-After says after a 429 or a 503,
and waits out a sessions app that does not answer (a restart) with growing pauses. It logs rooms and
outcomes, never a patient or a token.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from clinic.config import DemoSettings
from clinic.demo import Unreachable, http, marker_path, monitors_path, read_monitors

log = logging.getLogger("clinic.monitors")

EVERY_SECONDS = 5.0
# A monitor in a room with no started session asks again this often.
IDLE_SECONDS = 30.0
# A sessions app that does not answer is asked again after 1 s, 2 s, 4 s ... at most this long.
LONGEST_PAUSE = 30.0

# A deterioration, in readings: the decline, the worst, the recovery.
DECLINE, WORST, RECOVERY = 6, 4, 12
# How far the worst of it moves each vital sign from the patient's own baseline: systolic to the high
# 80s (3 NEWS2 points alone: an urgent alert), heart rate to about 115, breathing to about 22, SpO2 to 92-93.
WORST_CHANGE = {"systolic": -36, "diastolic": -18, "heart_rate": 40, "respiratory_rate": 7, "spo2": -5}


class VitalSigns:
    """One simulated patient's vital signs, reading after reading: a steady baseline of their own with a
    little noise, and now and then a deterioration and its recovery."""

    def __init__(self, rng: random.Random, deteriorate_after: tuple[int, int] = (36, 120)):
        self.rng = rng
        self.deteriorate_after = deteriorate_after
        self.baseline = {"heart_rate": rng.randint(64, 84), "systolic": rng.randint(114, 132),
                         "diastolic": rng.randint(68, 82), "respiratory_rate": rng.randint(13, 17),
                         "spo2": rng.randint(96, 99), "temperature": rng.uniform(36.5, 37.0)}
        self.steady_left = rng.randint(*deteriorate_after)
        self.episode_step: int | None = None  # None while steady, else readings into the deterioration

    @property
    def severity(self) -> float:
        """0 while steady, rising to 1 at the worst and back to 0 as the patient recovers."""
        step = self.episode_step
        if step is None:
            return 0.0
        if step < DECLINE:
            return (step + 1) / DECLINE
        if step < DECLINE + WORST:
            return 1.0
        return max(0.0, 1 - (step - DECLINE - WORST + 1) / RECOVERY)

    @property
    def deteriorating(self) -> bool:
        return self.episode_step is not None

    def reading(self, at: datetime) -> dict:
        """The set a monitor would post now (measured_at `at`)."""
        severity, noise = self.severity, self.rng.uniform
        values = {name: self.baseline[name] + severity * WORST_CHANGE.get(name, 0) for name in self.baseline}
        values["heart_rate"] += noise(-2, 2)
        values["systolic"] += noise(-3, 3)
        values["diastolic"] += noise(-2, 2)
        values["respiratory_rate"] += noise(-1, 1)
        values["spo2"] += noise(-0.6, 0.6)
        values["temperature"] += noise(-0.05, 0.05)
        return {"measured_at": at.isoformat(), "heart_rate": round(values["heart_rate"]), "systolic": round(values["systolic"]),
                "diastolic": round(values["diastolic"]), "respiratory_rate": round(values["respiratory_rate"]),
                "spo2": min(100, round(values["spo2"])), "on_oxygen": False,
                "temperature": f"{values['temperature']:.1f}", "consciousness": "alert"}

    def advance(self) -> None:
        """The reading was stored: move on to the next."""
        if self.episode_step is None:
            self.steady_left -= 1
            if self.steady_left <= 0:
                self.episode_step = 0
        else:
            self.episode_step += 1
            if self.episode_step >= DECLINE + WORST + RECOVERY:
                self.episode_step = None
                self.steady_left = self.rng.randint(*self.deteriorate_after)


class Monitor:
    """One simulated monitor: its device, its patient's vital signs, when it posts next."""

    def __init__(self, entry: dict, vitals: VitalSigns):
        self.device_id = entry["device_id"]
        self.room = entry["room_name"]
        self.token = entry["token"]
        self.vitals = vitals
        self.next_at = 0.0
        self.posting = False  # its room had a started session at the last post


class Simulator:
    """Posts the readings of every monitor in monitors.json, each when it is due."""

    def __init__(self, settings: DemoSettings, every: float = EVERY_SECONDS, rng: random.Random | None = None,
                 deteriorate_after: tuple[int, int] = (36, 120), clock: Callable[[], float] = time.monotonic,
                 post=http):
        self.url = dict(settings.apps)["sessions"] + "/vitals"
        self.path: Path = monitors_path(settings)
        self.marker: Path = marker_path(settings)
        self.every = every
        self.rng = rng or random.Random()
        self.deteriorate_after = deteriorate_after
        self.clock = clock
        self.post = post
        self.monitors: dict[str, Monitor] = {}
        self._seen: float | None = None
        self.paused_until = 0.0
        self.pause = 0.0  # the last pause for a sessions app that did not answer; 0 while it answers

    def refresh(self) -> None:
        """Pick up monitors.json when the seed (re)wrote it; a monitor already known keeps its patient."""
        try:
            changed = self.path.stat().st_mtime
        except OSError:
            changed = None
        if changed == self._seen:
            return
        self._seen = changed
        entries = {entry["device_id"]: entry for entry in read_monitors(self.path)}
        self.monitors = {device_id: self.monitors.get(device_id) or Monitor(entry, VitalSigns(self.rng, self.deteriorate_after))
                         for device_id, entry in entries.items()}
        log.info("%d simulated monitor(s): %s", len(self.monitors), ", ".join(sorted(m.room for m in self.monitors.values())))

    def run(self, stop: threading.Event) -> None:
        log.info("posting vital signs to %s every %g s", self.url, self.every)
        while not stop.is_set():
            self.refresh()
            self.post_due()
            # The next post is due when the earliest monitor is, and not before a pause ends; at least
            # once a second the loop looks at monitors.json again.
            due = min((monitor.next_at for monitor in self.monitors.values()), default=float("inf"))
            wake = max(self.paused_until, due)
            stop.wait(max(0.05, min(1.0, wake - self.clock())))

    def post_due(self) -> None:
        for monitor in self.monitors.values():
            now = self.clock()
            if now < self.paused_until:
                return
            if monitor.next_at <= now:
                self.post_one(monitor, now)

    def post_one(self, monitor: Monitor, now: float) -> None:
        reading = monitor.vitals.reading(datetime.now(timezone.utc))
        try:
            answer = self.post("POST", self.url, {"readings": [reading]}, monitor.token)
        except Unreachable:
            self.pause = min(LONGEST_PAUSE, max(1.0, self.pause * 2))
            if self.pause == 1.0:
                log.warning("sessions does not answer at %s; trying again with growing pauses", self.url)
            self.paused_until = now + self.pause
            return
        if self.pause:
            log.info("sessions answers again")
            self.pause = 0.0
        if answer.status == 201:
            self._stored(monitor)
            monitor.next_at = now + self.every
        elif answer.status in (429, 503):
            wait = _retry_after(answer.headers, default=2 * self.every)
            log.warning("%s: sessions answered %d; waiting %g s as it asks", monitor.room, answer.status, wait)
            monitor.next_at = now + wait
        elif answer.status == 409:
            if monitor.posting:
                log.info("%s: no started session in the room any more; asking every %g s", monitor.room, IDLE_SECONDS)
            monitor.posting = False
            monitor.next_at = now + IDLE_SECONDS
        elif answer.status == 401:
            # The seed registers a new monitor for a room whose kept one is revoked, and this loop picks
            # up the monitors.json it writes: no restart needed.
            log.warning("%s: the monitor's token is refused (revoked?); it stops posting. To register it again: "
                        "delete %s and run `clinic seed-demo`", monitor.room, self.marker)
            monitor.next_at = float("inf")
        else:
            error = answer.body.get("error", {}) if isinstance(answer.body, dict) else {}
            log.warning("%s: sessions answered %d %s", monitor.room, answer.status, error.get("code", ""))
            monitor.next_at = now + self.every

    def _stored(self, monitor: Monitor) -> None:
        if not monitor.posting:
            log.info("%s: posting vital signs for the started session", monitor.room)
            monitor.posting = True
        was = monitor.vitals.deteriorating
        monitor.vitals.advance()
        if monitor.vitals.deteriorating and not was:
            log.info("%s: the patient deteriorates (falling blood pressure, rising heart rate, SpO2 dipping)", monitor.room)
        elif was and not monitor.vitals.deteriorating:
            log.info("%s: the patient has recovered", monitor.room)


def _retry_after(headers: dict, default: float) -> float:
    value = next((value for name, value in headers.items() if name.lower() == "retry-after"), None)
    try:
        return min(LONGEST_PAUSE * 4, max(1.0, float(value)))
    except (TypeError, ValueError):
        return default
