"""The clinic's settings for sessions, as one value the use cases are given (sessions.config reads it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

# What a living person can show, per parameter (inclusive). A value outside is a faulty probe or a
# typing slip, refused with 422 rather than scored. Configurable: SESSIONS_BOUNDS_<PARAMETER>=low:high.
DEFAULT_BOUNDS: dict[str, tuple[Decimal, Decimal]] = {
    "heart_rate": (Decimal(20), Decimal(300)),
    "systolic": (Decimal(40), Decimal(300)),
    "diastolic": (Decimal(20), Decimal(200)),
    "respiratory_rate": (Decimal(2), Decimal(80)),
    "spo2": (Decimal(50), Decimal(100)),
    "temperature": (Decimal("25.0"), Decimal("45.0")),
}


@dataclass(frozen=True)
class SessionRules:
    # NEWS2 (RCP 2017): a total at or above `urgent_total`, or `single_parameter_points` in any one
    # parameter, is urgent; a total at or above `emergency_total` is an emergency.
    urgent_total: int = 5
    emergency_total: int = 7
    single_parameter_points: int = 3
    # A partial set is scored with the latest value of each missing parameter taken within this window.
    scoring_window: timedelta = timedelta(minutes=15)
    # An episode ends when this many scored readings in a row are below the alert thresholds.
    calm_readings_to_close: int = 3
    # A reading timed later than now + skew is refused (a monitor's clock runs a little fast).
    future_skew: timedelta = timedelta(seconds=120)
    # A room with a registered monitor whose started session has had no reading for this long: monitor_silent.
    monitor_silent_after: timedelta = timedelta(minutes=5)
    # An alert nobody acknowledged for this long is raised again as an escalation.
    escalate_after: timedelta = timedelta(minutes=10)
    bounds: dict[str, tuple[Decimal, Decimal]] = field(default_factory=lambda: dict(DEFAULT_BOUNDS))
