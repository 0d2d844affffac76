"""Notifications' mail settings, read from environment variables in this one place (the README lists them)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from clinic.config import ConfigurationError, Settings, read_environment, read_int, read_timezone
from notifications.mail import address

SECURITIES = ("none", "starttls", "tls")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_RETRY_SECONDS = (5.0, 30.0, 120.0, 600.0)
# MAIL_FROM: an address, or a display name and an address in angle brackets.
_SENDER = re.compile(r"\s*(?:(?P<name>[^<>]*?)\s*<(?P<bracketed>[^<>]*)>|(?P<bare>[^<>]*?))\s*")


@dataclass(frozen=True)
class MailSettings:
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_security: str = "none"
    smtp_username: str = ""
    smtp_password: str = ""
    # A CA bundle for a relay whose certificate a private authority signed (else the system's CAs).
    smtp_ca_file: str = ""
    mail_from: str = "clinic@localhost"
    # The sender's display name when MAIL_FROM gives one ("Clinic <clinic@example.org>"); else clinic_name.
    mail_from_name: str = ""
    clinic_name: str = "Headache Infusion Clinic"
    clinic_address: str = ""
    clinic_phone: str = ""
    clinic_timezone: str = Settings.clinic_timezone
    oncall_emails: tuple[str, ...] = ()
    reminder_hour: int = 17
    contact_wait_minutes: int = 60
    send_retry_seconds: tuple[float, ...] = DEFAULT_RETRY_SECONDS

    def __repr__(self) -> str:  # the password never reaches a log
        return f"MailSettings(smtp_host={self.smtp_host!r}, smtp_port={self.smtp_port}, smtp_security={self.smtp_security!r})"

    @property
    def timezone(self) -> ZoneInfo:
        """The clinic's local time zone, for the times in emails and calendar files."""
        return ZoneInfo(self.clinic_timezone)

    def check_safe_to_run(self, production: bool) -> None:
        """Production refuses to send mail in clear text to another machine, and to send patients
        emails that cannot say where the clinic is or what number to call."""
        if not production:
            return
        if self.smtp_security == "none" and self.smtp_host not in LOCAL_HOSTS:
            raise ConfigurationError(
                f"CLINIC_ENV=production refuses plain SMTP to {self.smtp_host}: set SMTP_SECURITY to "
                "starttls or tls, or SMTP_HOST to localhost.")
        for name, value in (("CLINIC_PHONE", self.clinic_phone), ("CLINIC_ADDRESS", self.clinic_address)):
            if value in ("", UNSET_PHONE, UNSET_ADDRESS):
                raise ConfigurationError(f"CLINIC_ENV=production needs {name}: the emails tell patients where to come and whom to call.")


# What development emails say when the clinic's details are not configured (production refuses them).
UNSET_PHONE = "(CLINIC_PHONE is not set)"
UNSET_ADDRESS = "(CLINIC_ADDRESS is not set)"


def _retry_seconds(raw: str | None) -> tuple[float, ...]:
    if not raw:
        return DEFAULT_RETRY_SECONDS
    try:
        delays = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigurationError(f"SEND_RETRY_SECONDS must be comma-separated seconds, got {raw!r}") from None
    if not delays or any(delay <= 0 for delay in delays):
        raise ConfigurationError(f"SEND_RETRY_SECONDS must be positive seconds, got {raw!r}")
    return delays


def _sender(raw: str) -> tuple[str, str]:
    """(display name, address) from MAIL_FROM; ConfigurationError at start rather than a refusal at every send."""
    found = _SENDER.fullmatch(raw)
    name, sender = (found["name"] or "", found["bracketed"] or found["bare"] or "") if found else ("", "")
    try:
        address(sender, name)
    except ValueError:
        raise ConfigurationError(f"MAIL_FROM must be an email address, or a name and one in angle brackets "
                                 f"(Clinic <clinic@example.org>), got {raw!r}") from None
    return name, sender


def load_mail_settings(env=None, settings: Settings | None = None) -> MailSettings:
    """The mail settings from the environment (os.environ by default); ConfigurationError naming the
    variable at fault. Production (settings.is_production, else CLINIC_ENV) refuses plain SMTP to
    another machine."""
    env = os.environ if env is None else env
    security = (env.get("SMTP_SECURITY") or "none").lower()
    if security not in SECURITIES:
        raise ConfigurationError(f"SMTP_SECURITY must be one of {', '.join(SECURITIES)}, got {security!r}")
    reminder_hour = read_int(env, "REMINDER_HOUR", 17)
    if not 0 <= reminder_hour <= 23:
        raise ConfigurationError(f"REMINDER_HOUR must be an hour from 0 to 23, got {reminder_hour}")
    mail_from_name, mail_from = _sender(env.get("MAIL_FROM") or "clinic@localhost")
    mail = MailSettings(
        smtp_host=env.get("SMTP_HOST") or "127.0.0.1",
        smtp_port=read_int(env, "SMTP_PORT", 8025),
        smtp_security=security,
        smtp_username=env.get("SMTP_USERNAME") or "",
        smtp_password=env.get("SMTP_PASSWORD") or "",
        smtp_ca_file=env.get("SMTP_CA_FILE") or "",
        mail_from=mail_from,
        mail_from_name=mail_from_name,
        clinic_name=env.get("CLINIC_NAME") or "Headache Infusion Clinic",
        clinic_address=env.get("CLINIC_ADDRESS") or UNSET_ADDRESS,
        clinic_phone=env.get("CLINIC_PHONE") or UNSET_PHONE,
        clinic_timezone=(settings.clinic_timezone if settings is not None
                         else read_timezone(env, "CLINIC_TIMEZONE", Settings.clinic_timezone)),
        oncall_emails=tuple(part.strip() for part in (env.get("ONCALL_EMAILS") or "").split(",") if part.strip()),
        reminder_hour=reminder_hour,
        contact_wait_minutes=read_int(env, "CONTACT_WAIT_MINUTES", 60),
        send_retry_seconds=_retry_seconds(env.get("SEND_RETRY_SECONDS")),
    )
    mail.check_safe_to_run(settings.is_production if settings is not None
                           else read_environment(env) == "production")
    return mail
