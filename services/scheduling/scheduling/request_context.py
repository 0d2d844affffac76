"""What scheduling's views read from the request being handled, besides its body: the clinic's
scheduling rules and who is acting."""

from __future__ import annotations

from flask import current_app

from clinic.web import current_principal
from scheduling.domain import SchedulingRules


def rules() -> SchedulingRules:
    """The clinic's scheduling rules, as the app was created with (scheduling.app)."""
    return current_app.extensions["scheduling.rules"]


def actor() -> str:
    """The staff member making the change, as recorded beside it."""
    return current_principal().subject[:200]
