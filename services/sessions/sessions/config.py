"""Sessions' own settings, read from environment variables in this one place.

| variable | default | meaning |
| --- | --- | --- |
| SESSIONS_NEWS2_URGENT_TOTAL | 5 | a NEWS2 total at or above this raises an urgent alert |
| SESSIONS_NEWS2_EMERGENCY_TOTAL | 7 | a NEWS2 total at or above this raises an emergency alert |
| SESSIONS_NEWS2_SINGLE_PARAMETER | 3 | this many points in any one parameter raises an urgent alert |
| SESSIONS_SCORING_WINDOW_MINUTES | 15 | a partial set is scored with each missing parameter's latest value from this window |
| SESSIONS_CALM_READINGS | 3 | scored readings below the thresholds, in a row, that end an alert episode |
| SESSIONS_FUTURE_SKEW_SECONDS | 120 | how far ahead of the server's clock a reading's time may be |
| SESSIONS_MONITOR_SILENT_MINUTES | 5 | a monitored started session without a reading for this long raises monitor_silent |
| SESSIONS_ESCALATE_MINUTES | 10 | an alert unacknowledged for this long is raised again, escalated |
| SESSIONS_WATCH_SECONDS | 30 | how often the worker looks for silent monitors and unacknowledged alerts |
| SESSIONS_BOUNDS_<PARAMETER> | domain.rules | `low:high`, what a living person can show |

<PARAMETER> is HEART_RATE, SYSTOLIC, DIASTOLIC, RESPIRATORY_RATE, SPO2 or TEMPERATURE (°C).
"""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from clinic.config import ConfigurationError, read_int
from sessions.domain.rules import DEFAULT_BOUNDS, SessionRules


def _bounded(env, name: str, default: int, low: int, high: int) -> int:
    value = read_int(env, name, default)
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _bounds(env) -> dict[str, tuple[Decimal, Decimal]]:
    bounds = dict(DEFAULT_BOUNDS)
    for parameter in DEFAULT_BOUNDS:
        name = f"SESSIONS_BOUNDS_{parameter.upper()}"
        raw = env.get(name)
        if raw in (None, ""):
            continue
        try:
            low, high = (Decimal(part.strip()) for part in raw.split(":"))
        except (ValueError, InvalidOperation):
            raise ConfigurationError(f"{name} must be 'low:high', got {raw!r}") from None
        if not (low.is_finite() and high.is_finite() and low < high):
            raise ConfigurationError(f"{name} must be two numbers, the lower first, got {raw!r}")
        bounds[parameter] = (low, high)
    return bounds


def load_rules(env=None) -> SessionRules:
    """The sessions rules from the environment (os.environ unless given); malformed values are refused."""
    env = os.environ if env is None else env
    urgent = _bounded(env, "SESSIONS_NEWS2_URGENT_TOTAL", 5, 1, 20)
    emergency = _bounded(env, "SESSIONS_NEWS2_EMERGENCY_TOTAL", 7, 1, 20)
    if emergency < urgent:
        raise ConfigurationError("SESSIONS_NEWS2_EMERGENCY_TOTAL must not be below SESSIONS_NEWS2_URGENT_TOTAL")
    return SessionRules(
        urgent_total=urgent,
        emergency_total=emergency,
        single_parameter_points=_bounded(env, "SESSIONS_NEWS2_SINGLE_PARAMETER", 3, 1, 3),
        scoring_window=timedelta(minutes=_bounded(env, "SESSIONS_SCORING_WINDOW_MINUTES", 15, 1, 240)),
        calm_readings_to_close=_bounded(env, "SESSIONS_CALM_READINGS", 3, 1, 50),
        future_skew=timedelta(seconds=_bounded(env, "SESSIONS_FUTURE_SKEW_SECONDS", 120, 0, 3600)),
        monitor_silent_after=timedelta(minutes=_bounded(env, "SESSIONS_MONITOR_SILENT_MINUTES", 5, 1, 240)),
        escalate_after=timedelta(minutes=_bounded(env, "SESSIONS_ESCALATE_MINUTES", 10, 1, 240)),
        bounds=_bounds(env),
    )


def watch_interval(env=None) -> timedelta:
    env = os.environ if env is None else env
    return timedelta(seconds=_bounded(env, "SESSIONS_WATCH_SECONDS", 30, 1, 3600))
