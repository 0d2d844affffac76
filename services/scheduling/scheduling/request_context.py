"""What scheduling's views read from the app besides the request: the clinic's scheduling rules."""

from __future__ import annotations

from flask import current_app

from scheduling.domain import SchedulingRules


def rules() -> SchedulingRules:
    """The clinic's scheduling rules, as the app was created with (scheduling.app)."""
    return current_app.extensions["scheduling.rules"]

