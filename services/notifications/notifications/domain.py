"""Contact copies: what notifications knows of how to reach each patient."""

from __future__ import annotations

from datetime import datetime


def is_newer(incoming_changed_at: datetime, stored_changed_at: datetime | None) -> bool:
    """Events can arrive out of order after a redelivery: an older contact change never overwrites a newer one."""
    return stored_changed_at is None or incoming_changed_at >= stored_changed_at


def may_email(contact: dict) -> bool:
    return bool(contact.get("email")) and not contact.get("email_opt_out")
