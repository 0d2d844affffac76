"""Notifications' contact copies, each use case given a unit of work (clinic.unit_of_work)."""

from __future__ import annotations

import logging

from clinic.unit_of_work import UnitOfWork
from notifications.db.messages import keep_contact_finding_waiting, release_waiting

log = logging.getLogger(__name__)


def keep_contact(uow: UnitOfWork, contact: dict) -> bool:
    """Keep a patient's contact details at the highest version records stamped: whatever order two
    quick changes arrive in, and whichever worker replica applies them, the newer one stays. The
    patient's messages that were waiting for the contact then go (or are skipped, with the reason)."""
    with uow:
        kept, waiting = keep_contact_finding_waiting(uow.connection, contact)
        if not kept:
            log.info("contact change for patient %s at version %s is older than the copy; ignored",
                     contact["patient_id"], contact["version"])
        if waiting or not kept:
            # Not kept: the newer copy stored decides, should any message still wait (one recorded
            # while that copy was being stored).
            release_waiting(uow, contact["patient_id"])
        return kept
