"""What sessions' views read from the app besides the request: the clinic's sessions rules."""

from __future__ import annotations

from flask import current_app

from sessions.domain.rules import SessionRules


def rules() -> SessionRules:
    """The clinic's sessions rules, as the app was created with (sessions.app)."""
    return current_app.extensions["sessions.rules"]
