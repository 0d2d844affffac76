"""Alert episodes: when a NEWS2 score raises an alert, raises it again, or ends the episode; escalation.

Nurses are told once per episode, not at every reading: a monitor posting every minute for a patient
who stays at NEWS2 5 would otherwise page the ward every minute, and alarms that repeat get ignored.
An episode starts with the first reading at an alert level and raises that level; a later reading at
a higher level (urgent to emergency) raises again, and the episode keeps the higher level until it
ends. It ends after `rules.calm_readings_to_close` scored readings in a row below the thresholds;
any reading at an alert level on the way starts that count again. The next alert-level reading then
opens a new episode and raises again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from clinic.events import ALERT_LEVELS
from sessions.domain.news2 import Score
from sessions.domain.rules import SessionRules

URGENT, EMERGENCY = ALERT_LEVELS
# Lowest first: a level later in this tuple is a rise.
_RANK = {level: rank for rank, level in enumerate((URGENT, EMERGENCY))}


def alert_level(score: Score, rules: SessionRules) -> str | None:
    """The alert level a score reaches by the configured thresholds: emergency, urgent, or None.

    Emergency: a total at or above rules.emergency_total. Urgent: a total at or above
    rules.urgent_total, or any one parameter with rules.single_parameter_points (the chart's "red
    score"). A partial score counts too: its total is a lower bound of the full set's, so a threshold
    it reaches the full set reaches as well.
    """
    if score.total >= rules.emergency_total:
        return EMERGENCY
    if score.total >= rules.urgent_total or any(points >= rules.single_parameter_points for points in score.points.values()):
        return URGENT
    return None


@dataclass(frozen=True)
class Episode:
    """An open alert episode of a session: the highest level raised in it, and the calm readings since
    the last reading at an alert level."""

    level: str
    calm_readings: int = 0


def after_reading(episode: Episode | None, level: str | None, rules: SessionRules,
                  complete: bool = True) -> tuple[Episode | None, str | None]:
    """The episode after one scored reading, and the level to raise now (None: raise nothing).

    Call it once per scored reading, in measurement order, with the reading's alert_level. A reading
    below the thresholds (level None) counts as calm only when its set was complete: a partial set
    below the thresholds says nothing about the parameters it lacks, so it neither counts nor resets.
    """
    if level is not None and level not in _RANK:
        raise ValueError(f"level must be one of {', '.join(_RANK)} or None, got {level!r}")
    if episode is None:
        return (None, None) if level is None else (Episode(level), level)
    if level is None:
        if not complete:
            return episode, None
        calm = episode.calm_readings + 1
        return (None, None) if calm >= rules.calm_readings_to_close else (Episode(episode.level, calm), None)
    if _RANK[level] > _RANK[episode.level]:
        return Episode(level), level
    return Episode(episode.level), None


def escalation_due(raised_at: datetime, acknowledged_at: datetime | None, escalated: bool, now: datetime,
                   rules: SessionRules) -> bool:
    """Whether an alert should now be raised again as an escalation.

    Due when nobody acknowledged it and rules.escalate_after has passed since it was raised (at that
    moment exactly, too). An alert is escalated once: `escalated` is true when it already was, or when
    it is itself an escalation, so the on-call staff are not paged in a loop.
    """
    if acknowledged_at is not None or escalated:
        return False
    return now - raised_at >= rules.escalate_after
