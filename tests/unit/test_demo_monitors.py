"""The demo's simulated monitors (clinic.monitors) without a clinic: readings a living patient shows, a
deterioration that NEWS2 scores at an alert level and its recovery, the waits after 429, 503, 409 and
no answer at all; and both demo commands refused in production."""

from __future__ import annotations

import random
import stat
from datetime import datetime, timezone

import pytest

from clinic import cli
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


@pytest.mark.parametrize("command", [["seed-demo"], ["simulate-monitors"]])
def test_both_demo_commands_are_refused_in_production(command, monkeypatch, capsys):
    monkeypatch.setenv("CLINIC_ENV", "production")
    assert cli.main(command) == 2
    assert "refused when CLINIC_ENV is production" in capsys.readouterr().err
