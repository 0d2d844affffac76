"""The sender: a job in the worker that sends queued messages from the mail log and records each one's fate.

A message is claimed in one short transaction (a lease, so no other sender takes it), rendered and
sent with no transaction open (an SMTP server that hangs never holds the database), and marked in
another short transaction right after it went out. A sender that dies between sending and marking
leaves the lease to run out: the message is then sent again, with the same Message-ID.

Told to stop (the worker's SIGTERM), the sender ends after the message in hand, marked, and gives
back the lease of those it claimed and did not reach, for the next sender to take at once.
"""

from __future__ import annotations

import logging
import smtplib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa

from clinic.unit_of_work import UnitOfWork
from clinic.worker import Job
from notifications import mail
from notifications.config import MailSettings
from notifications.db import messages

log = logging.getLogger(__name__)

# Long enough for a whole batch at the SMTP timeout (20 x 10 s); it is also the longest a message
# waits to be sent again when a sender died between sending it and marking it.
LEASE = timedelta(minutes=5)
BATCH = 20
SMTP_TIMEOUT_SECONDS = 10.0


class Unsendable(Exception):
    """This message can never be sent as it is (a template error, a refused recipient): failed for good."""


@dataclass
class Outcome:
    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _recipient_name(message: dict) -> str:
    contact = message.get("contact")
    if not contact:
        return ""
    return f"{contact.get('given_name') or ''} {contact.get('family_name') or ''}"


def render(message: dict, mail_settings: MailSettings, compose: Callable, now) -> object:
    """The email of one claimed message; Unsendable when it cannot be made (the reason names the
    error's class, never a value)."""
    try:
        composed = compose(message["kind"], message["context"], message.get("contact"), mail_settings)
    except Exception as exc:  # noqa: BLE001 - any template failure fails this message only
        raise Unsendable(f"template error ({type(exc).__name__})") from exc
    try:
        to = mail.address(message["recipient"], _recipient_name(message))
    except ValueError as exc:
        raise Unsendable("not an email address") from exc
    sender = mail.address(mail_settings.mail_from, mail_settings.mail_from_name or mail_settings.clinic_name)
    try:
        return mail.build_message(composed, to=to, sender=sender, message_id=message["message_id"], date=now)
    except (ValueError, TypeError) as exc:
        raise Unsendable(f"message could not be built ({type(exc).__name__})") from exc


class ServerUnavailable(Exception):
    """The SMTP server would not take mail at all (its greeting, STARTTLS or the login refused): the
    fault of the server or of our settings, never of a message, so every message waits and is tried again."""


def _connect(connect: Callable, mail_settings: MailSettings):
    try:
        return connect(mail_settings, timeout=SMTP_TIMEOUT_SECONDS)
    except smtplib.SMTPException as exc:
        # A 5xx here (535 wrong password, 554 at the greeting) says nothing about the message.
        raise ServerUnavailable(mail.describe_error(exc)) from exc


def _refused_for_good(exc: smtplib.SMTPException) -> bool:
    # A refused recipient or a 5xx to the message itself will not change by trying again; a refused
    # sender (our own settings) or a 4xx will.
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return False
    return isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code >= 500


def send_due(uow: UnitOfWork, mail_settings: MailSettings, compose: Callable | None = None, *,
             lease: timedelta = LEASE, batch: int = BATCH, connect: Callable = mail.connect,
             stopping: threading.Event | None = None) -> Outcome:
    """Send the queued messages that are due, up to `batch`, and record each one's fate: sent;
    failed for good with the reason (template error, refused recipient); skipped with the reason
    (the patient opted out or removed their address since it was queued); or still queued with one
    more attempt and a later next attempt (the server could not be reached or refused the login). `compose` is
    notifications.compose.compose unless given. Once `stopping` is set, no further message is
    begun: those claimed and not begun are released, left in the outcome's tallies as nothing."""
    if compose is None:
        from notifications.compose import compose
    with uow:
        claimed = messages.claim_due(uow.connection, uow.now, lease, batch)
    outcome = Outcome()
    if not claimed:
        return outcome
    smtp = None
    try:
        for position, message in enumerate(claimed):
            if stopping is not None and stopping.is_set():
                _release(uow, claimed[position:])
                return outcome
            if message["patient_id"] is not None:
                # The contact copy as it is now: an opt-out (or a removed address) that came after the
                # message was queued, during an SMTP outage say, still stops it.
                where = messages.addressed(message["contact"], message["patient_id"])
                if where["status"] == messages.SKIPPED:
                    _record(uow, outcome.skipped, message, messages.mark_skipped, where["reason"])
                    continue
            try:
                email = render(message, mail_settings, compose, uow.clock())
                if smtp is None:
                    smtp = _connect(connect, mail_settings)
                smtp.send_message(email, from_addr=mail_settings.mail_from, to_addrs=[message["recipient"]])
            except Unsendable as exc:
                _record(uow, outcome.failed, message, messages.mark_failed, str(exc))
            except ServerUnavailable as exc:
                _retry_all(uow, outcome, claimed[position:], str(exc), mail_settings)
                return outcome
            except smtplib.SMTPException as exc:
                if _refused_for_good(exc):
                    _record(uow, outcome.failed, message, messages.mark_failed, mail.describe_error(exc))
                elif isinstance(exc, smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError):
                    _retry_all(uow, outcome, claimed[position:], mail.describe_error(exc), mail_settings)
                    smtp = None
                    return outcome
                else:
                    _record(uow, outcome.retrying, message, messages.retry_later, mail.describe_error(exc),
                            mail_settings.send_retry_seconds)
            except OSError as exc:
                # The server cannot be reached: nothing else in this batch can go either.
                _retry_all(uow, outcome, claimed[position:], mail.describe_error(exc), mail_settings)
                smtp = None
                return outcome
            else:
                _record(uow, outcome.sent, message, messages.mark_sent)
    finally:
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
    return outcome


def _record(uow: UnitOfWork, tally: list[str], message: dict, mark: Callable, *args) -> None:
    with uow:
        mark(uow.connection, message["id"], uow.now, *args)
    tally.append(message["id"])
    # Ids and kinds only: no address, no body.
    log.info("message %s (%s): %s", message["id"], message["kind"], mark.__name__)


def _release(uow: UnitOfWork, remaining: list[dict]) -> None:
    """Give back the lease of messages claimed and not begun: still queued, due, for any sender."""
    table = messages.messages
    with uow:
        uow.connection.execute(sa.update(table).where(table.c.id.in_([message["id"] for message in remaining]),
                                                      table.c.status == messages.QUEUED).values(claimed_until=None))
    log.info("stopping: %d message(s) left for the next sender", len(remaining))


def _retry_all(uow: UnitOfWork, outcome: Outcome, remaining: list[dict], error: str,
               mail_settings: MailSettings) -> None:
    with uow:
        for message in remaining:
            messages.retry_later(uow.connection, message["id"], uow.now, error, mail_settings.send_retry_seconds)
    outcome.retrying.extend(message["id"] for message in remaining)
    log.warning("SMTP server unavailable (%s): %d message(s) wait for the next attempt", error, len(remaining))


def expire_waiting(uow: UnitOfWork, mail_settings: MailSettings) -> int:
    """Messages waiting for a contact longer than CONTACT_WAIT_MINUTES are skipped with the reason
    (those whose contact has arrived meanwhile are released first)."""
    with uow:
        return messages.skip_stale_waiting(uow, timedelta(minutes=mail_settings.contact_wait_minutes))


def jobs(mail_settings: MailSettings, every: timedelta = timedelta(seconds=1)) -> list[Job]:
    """The worker's mail jobs: the sender, and the end of waiting for contacts that never came."""
    return [Job("send mail", every, lambda uow, stopping: send_due(uow, mail_settings, stopping=stopping),
                longest=LEASE, sees_stop=True),
            Job("stale waiting messages", timedelta(minutes=1), lambda uow: expire_waiting(uow, mail_settings))]
