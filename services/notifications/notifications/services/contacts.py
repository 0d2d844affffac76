"""Notifications' use cases, each given a unit of work (clinic.unit_of_work)."""

from __future__ import annotations

import logging

from clinic.unit_of_work import UnitOfWork
from notifications import db

log = logging.getLogger(__name__)


def keep_contact(uow: UnitOfWork, contact: dict) -> bool:
    """Keep a patient's contact details at the highest version records stamped: whatever order two
    quick changes arrive in, and whichever worker replica applies them, the newer one stays."""
    with uow:
        kept = db.keep_contact(uow.connection, contact)
        if not kept:
            log.info("contact change for patient %s at version %s is older than the copy; ignored",
                     contact["patient_id"], contact["version"])
        return kept
