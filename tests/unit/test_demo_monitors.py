"""The demo's simulated monitors (clinic.monitors) without a clinic: readings a living patient shows, a
deterioration that NEWS2 scores at an alert level and its recovery, the waits after 429, 503, 409 and
no answer at all, and the loop's sleeps; the demo seed's day (clinic.demo: its marker, an earlier day's
open sessions, its tokens' lifetime); and both demo commands refused in production."""

from __future__ import annotations

import random
import stat
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import jwt
import pytest

from clinic import cli, demo
from clinic.config import load_demo_settings
from clinic.demo import Answer, Unreachable, write_private
from clinic.monitors import DECLINE, IDLE_SECONDS, RECOVERY, WORST, Simulator, VitalSigns
from sessions.domain.alerts import alert_level
from sessions.domain.news2 import score
from sessions.domain.rules import SessionRules

NOW = datetime(2026, 11, 30, 14, 0, tzinfo=timezone.utc)


def _level(reading: dict) -> str | None:
    return alert_level(score(reading, 1), SessionRules())


def test_a_steady_patient_scores_no_alert_and_a_deterioration_does_then_recovers():
    vitals = VitalSigns(random.Random(3), deteriorate_after=(5, 5))
    levels = []
    for _ in range(5 + DECLINE + WORST + RECOVERY + 3):
        reading = vitals.reading(NOW)
        assert 40 <= reading["heart_rate"] <= 140 and 80 <= reading["systolic"] <= 140 and 88 <= reading["spo2"] <= 100
        levels.append(_level(reading))
        vitals.advance()
    assert levels[:5] == [None] * 5, "steady readings"
    assert {"urgent", "emergency"} & set(levels[5:5 + DECLINE + WORST]), "the worst of the deterioration raises an alert"
    assert levels[-3:] == [None] * 3, "recovered"


class Sessions:
    """POST /vitals as a fake: answers in turn (an Answer, or Unreachable to raise)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.posted = []

    def __call__(self, method, url, body, token):
        self.posted.append((url, body, token))
        answer = self.answers.pop(0)
        if answer is Unreachable:
            raise Unreachable("no answer")
        return answer


@pytest.fixture
def demo_settings(tmp_path):
    settings = load_demo_settings({"CLINIC_VAR_DIR": str(tmp_path), "CLINIC_PORT_OFFSET": "7"})
    write_private(tmp_path / "demo" / "monitors.json",
                  {"monitors": [{"device_id": "d1", "room_id": "r1", "room_name": "Infusion 1", "token": "dev_secret"}]})
    return settings


def test_the_simulator_posts_with_the_device_token_and_waits_as_sessions_asks(demo_settings, tmp_path):
    assert stat.S_IMODE((tmp_path / "demo" / "monitors.json").stat().st_mode) == 0o600
    sessions = Sessions(Answer(201, {}, {}), Answer(429, {"Retry-After": "7"}, {}), Answer(503, {"Retry-After": "3"}, {}),
                        Answer(409, {}, {}), Unreachable, Unreachable, Answer(201, {}, {}))
    now = [100.0]
    simulator = Simulator(demo_settings, every=5.0, clock=lambda: now[0], post=sessions)
    simulator.refresh()
    [monitor] = simulator.monitors.values()

    simulator.post_due()
    url, body, token = sessions.posted[0]
    assert url == "http://127.0.0.1:8109/vitals" and token == "dev_secret" and len(body["readings"]) == 1
    assert monitor.next_at == 105.0
    for expected_wait in (7.0, 3.0, IDLE_SECONDS):  # 429 and 503: Retry-After; 409: no started session
        now[0] = monitor.next_at
        simulator.post_due()
        assert monitor.next_at == now[0] + expected_wait
    now[0] = monitor.next_at
    simulator.post_due()  # no answer: every monitor waits, longer each time
    assert simulator.paused_until == now[0] + 1
    now[0] = simulator.paused_until
    simulator.post_due()
    assert simulator.paused_until == now[0] + 2
    now[0] = simulator.paused_until
    simulator.post_due()
    assert simulator.pause == 0 and monitor.next_at == now[0] + 5.0
    assert not sessions.answers


class Stop:
    """threading.Event's wait as run() uses it: each wait moves the fake clock on by its timeout, and
    the loop stops once `until` is reached."""

    def __init__(self, now: list[float], until: float):
        self.now, self.until, self.waits = now, until, []

    def is_set(self) -> bool:
        return self.now[0] >= self.until

    def wait(self, timeout: float) -> bool:
        self.waits.append(round(timeout, 6))
        self.now[0] += timeout
        return self.is_set()


def test_run_sleeps_until_the_next_post_is_due_or_a_pause_ends(demo_settings):
    now = [100.0]
    sessions = Sessions(*[Answer(201, {}, {})] * 6)
    simulator = Simulator(demo_settings, every=0.4, clock=lambda: now[0], post=sessions)
    stop = Stop(now, until=102.0)
    simulator.run(stop)
    assert len(sessions.posted) == 5, "a post every 0.4 s for 2 s"
    assert stop.waits == [0.4] * 5, "one wake-up a post: none in between"

    sessions = Sessions(Unreachable, Unreachable, *[Answer(201, {}, {})] * 3)
    simulator = Simulator(demo_settings, every=5.0, clock=lambda: now[0], post=sessions)
    stop = Stop(now, until=now[0] + 6.0)
    simulator.run(stop)
    # No answer: asked again after 1 s, then 2 s; then posting every 5 s, waking at least once a second.
    assert stop.waits == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert len(sessions.posted) == 3

@pytest.mark.parametrize("command", [["seed-demo"], ["simulate-monitors"]])
def test_both_demo_commands_are_refused_in_production(command, monkeypatch, capsys):
    monkeypatch.setenv("CLINIC_ENV", "production")
    assert cli.main(command) == 2
    assert "refused when CLINIC_ENV is production" in capsys.readouterr().err


def test_the_seed_runs_again_on_a_later_day_only(demo_settings, tmp_path, monkeypatch, capsys):
    env = {"CLINIC_TIMEZONE": "America/Chicago"}
    assert not demo.seeded_today(demo_settings, env, NOW), "no marker yet"
    # 14:00 UTC is 08:00 in Chicago: a seed at 05:30 UTC was yesterday there, one at 06:30 UTC today.
    write_private(demo.marker_path(demo_settings), {"seeded_at": "2026-11-30T05:30:00+00:00"})
    assert not demo.seeded_today(demo_settings, env, NOW)
    write_private(demo.marker_path(demo_settings), {"seeded_at": "2026-11-30T06:30:00+00:00"})
    assert demo.seeded_today(demo_settings, env, NOW)
    assert not demo.seeded_today(demo_settings, env, NOW + timedelta(days=1))

    monkeypatch.setenv("CLINIC_VAR_DIR", str(tmp_path))
    write_private(demo.marker_path(demo_settings), {"seeded_at": datetime.now(timezone.utc).isoformat()})
    assert cli.main(["seed-demo"]) == 0
    assert "seeded today" in capsys.readouterr().out, "a seed today: nothing to do"


class FakeClinic:
    """Clinic.call as a fake: GET /sessions answers from `open_sessions`; every call is kept."""

    def __init__(self, open_sessions):
        self.open_sessions, self.calls = open_sessions, []

    def call(self, service, role, method, path, body=None, query=None, expect=(200, 201)):
        self.calls.append((service, role, method, path, body, expect))
        if method == "GET":
            return Answer(200, {}, [found for found in self.open_sessions if found["status"] == query["status"]])
        return Answer(200, {}, {})


def test_a_demo_patients_sessions_left_open_on_an_earlier_day_are_aborted():
    chicago = ZoneInfo("America/Chicago")
    open_sessions = [
        {"id": "s1", "patient_id": "amelia", "status": "started", "checked_in_at": "2026-11-29T20:00:00+00:00"},
        {"id": "s2", "patient_id": "daniel", "status": "waiting", "checked_in_at": "2026-11-30T05:00:00Z"},
        {"id": "s3", "patient_id": "amelia", "status": "waiting", "checked_in_at": "2026-11-30T07:00:00+00:00"},  # today
    ]
    clinic = FakeClinic(open_sessions)
    left_open = demo._open_from_earlier_days(clinic, NOW.astimezone(chicago).date(), chicago)
    assert [found["id"] for found in left_open] == ["s1", "s2"]
    assert demo._end(clinic, [found for found in left_open if found["patient_id"] == "amelia"]) == 1
    (_, role, method, path, body, expect) = clinic.calls[-1]
    assert (role, method, path, body["reason"], expect) == ("nurse", "POST", "/sessions/s1/abort", "other", (200, 409))


def test_the_seeds_tokens_live_no_longer_than_the_settings_allow(tmp_path):
    env = {"CLINIC_VAR_DIR": str(tmp_path), "CLINIC_TOKEN_MAX_LIFETIME_MINUTES": "20"}
    clinic = demo.Clinic(load_demo_settings(env), env)
    claims = jwt.decode(clinic.token("records", "admin"), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 20 * 60


def test_a_refused_monitor_token_stops_that_monitor_and_says_how_to_register_it_again(demo_settings, caplog):
    now = [100.0]
    simulator = Simulator(demo_settings, every=5.0, clock=lambda: now[0], post=Sessions(Answer(401, {}, {})))
    simulator.refresh()
    [monitor] = simulator.monitors.values()
    with caplog.at_level("WARNING", logger="clinic.monitors"):
        simulator.post_due()
    assert monitor.next_at == float("inf")
    [line] = [record.getMessage() for record in caplog.records if "refused" in record.getMessage()]
    assert str(demo.marker_path(demo_settings)) in line and "clinic seed-demo" in line and "dev_secret" not in line
