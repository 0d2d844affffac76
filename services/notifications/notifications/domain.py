"""Notifications rules: no Flask, no database session, no pika."""

from __future__ import annotations

from datetime import datetime


def contact_copy(data: dict, changed_at: datetime) -> dict:
    """The contact copy an event describes. An event from before versions existed counts as version 0,
    so it fills a copy nobody has made yet but never replaces a versioned one."""
    return {
        "patient_id": str(data["patient_id"]),
        "given_name": data["given_name"],
        "family_name": data["family_name"],
        "email": data["email"],
        "phone": data["phone"],
        "preferred_contact": data["preferred_contact"],
        "email_opt_out": data["email_opt_out"],
        "changed_at": changed_at,
        "version": data.get("contact_version") or 0,
    }
