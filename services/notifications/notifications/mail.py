"""Email as it goes on the wire: the Message-ID derived from the message's identity, the message
built with email.message.EmailMessage (values from the bus never pasted into headers), and an SMTP
connection made from the mail settings."""

from __future__ import annotations

import smtplib
import ssl
import uuid
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

# Message-IDs live under their own UUID namespace, so the same (event, kind, recipient) always gives
# the same Message-ID: a message sent again after a crash is recognisable as the same one.
MESSAGE_ID_NAMESPACE = uuid.UUID("5a0f3c52-3c1e-4c55-9c6e-7d4a1f0b8e21")
MESSAGE_ID_DOMAIN = "notifications.clinic"


def message_id_for(event_id: str, kind: str, recipient: str) -> str:
    """The Message-ID of the one email for (event, template, recipient)."""
    derived = uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{event_id}\n{kind}\n{recipient.lower()}")
    return f"<{derived}@{MESSAGE_ID_DOMAIN}>"


def _single_line(value: str) -> str:
    # A display name from the bus may hold CR/LF or other control characters: they are dropped, so
    # they cannot end the header and begin another (Address would refuse them outright).
    return " ".join("".join(ch if ch.isprintable() else " " for ch in value).split())


def address(email: str, name: str = "") -> Address:
    """An Address from an email address and a display name, either of which may have come over the bus.
    ValueError for an address that is not one (it would otherwise be an injection)."""
    if any(not ch.isprintable() or ch.isspace() for ch in email) or email.count("@") != 1:
        raise ValueError("not an email address")
    username, domain = email.split("@")
    return Address(display_name=_single_line(name), username=username, domain=domain)


def build_message(composed, *, to: Address, sender: Address, message_id: str, date=None) -> EmailMessage:
    """The email: plain text with an HTML alternative, and the .ics when the composition has one."""
    message = EmailMessage()
    message["Subject"] = _single_line(composed.subject)
    message["From"] = sender
    message["To"] = to
    message["Message-ID"] = message_id
    if date is not None:
        message["Date"] = format_datetime(date)
    message.set_content(composed.text)
    message.add_alternative(composed.html, subtype="html")
    if composed.calendar is not None:
        method = (composed.calendar_method or "REQUEST").upper()
        if method not in ("REQUEST", "CANCEL", "PUBLISH"):
            raise ValueError(f"calendar method {method!r}")
        # add_attachment turns multipart/alternative into multipart/mixed with the alternative first.
        message.add_attachment(composed.calendar, maintype="text", subtype="calendar", filename="appointment.ics",
                               params={"method": method})
    return message


def connect(mail_settings, timeout: float = 10.0) -> smtplib.SMTP:
    """An SMTP connection as the settings say: plain, STARTTLS or implicit TLS, with login if a user is set."""
    # Certificates are verified (host name included), against SMTP_CA_FILE when one is given.
    context = ssl.create_default_context(cafile=mail_settings.smtp_ca_file or None)
    if mail_settings.smtp_security == "tls":
        smtp = smtplib.SMTP_SSL(mail_settings.smtp_host, mail_settings.smtp_port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(mail_settings.smtp_host, mail_settings.smtp_port, timeout=timeout)
    try:
        if mail_settings.smtp_security == "starttls":
            smtp.starttls(context=context)
        if mail_settings.smtp_username:
            smtp.login(mail_settings.smtp_username, mail_settings.smtp_password)
    except BaseException:
        smtp.close()
        raise
    return smtp


def describe_error(exc: BaseException) -> str:
    """What the mail log keeps of an error: its class and the SMTP code, never its text (which may
    quote an address or a line of the body)."""
    code = getattr(exc, "smtp_code", None)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({str(answer[0]) for answer in exc.recipients.values()})
        code = ",".join(codes) or None
    return f"{type(exc).__name__}" + (f" (SMTP {code})" if code else "")
