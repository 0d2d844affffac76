"""Notifications' mail on the wire: Message-IDs derived from the message's identity, headers safe
from values that came over the bus, and the mail settings' refusal of clear-text SMTP in production."""

from __future__ import annotations

import email
import email.policy

import pytest

from clinic.config import ConfigurationError
from notifications.compose import Composed
from notifications.config import load_mail_settings
from notifications.mail import address, build_message, describe_error, message_id_for


def test_the_message_id_is_the_same_for_the_same_message_and_differs_otherwise():
    event = "6f1c2a9e-0d4b-4c51-9a53-3f2e7d1b8c40"
    first = message_id_for(event, "infusion_booked", "ida@example.org")
    assert first == message_id_for(event, "infusion_booked", "IDA@example.org")
    assert first.startswith("<") and first.endswith("@notifications.clinic>")
    others = {message_id_for(event, "reminder", "ida@example.org"),
              message_id_for(event, "infusion_booked", "sam@example.org"),
              message_id_for("0b4e5f0a-8f0e-4f43-8d6f-2b1a9c3d7e51", "infusion_booked", "ida@example.org")}
    assert first not in others and len(others) == 3


def parsed(message) -> email.message.EmailMessage:
    return email.message_from_bytes(message.as_bytes(), policy=email.policy.default)


def test_line_breaks_in_a_name_or_subject_from_the_bus_cannot_add_a_header():
    composed = Composed(subject="Booked\r\nBcc: victim@example.org", text="text", html="<p>html</p>")
    message = build_message(composed, to=address("ida@example.org", "Ida\r\nBcc: victim@example.org\nX-Evil: 1"),
                            sender=address("desk@clinic.example", "Clinic"), message_id="<a@notifications.clinic>")
    raw = message.as_bytes()
    headers = raw.split(b"\n\n")[0]
    assert b"\nBcc:" not in headers and b"\nX-Evil:" not in headers
    back = parsed(message)
    assert back["Bcc"] is None and back["X-Evil"] is None
    assert back["To"].addresses[0].addr_spec == "ida@example.org"


@pytest.mark.parametrize("bad", ["ida@example.org\r\nBcc: victim@example.org", "ida example.org", "a@b@c", "ida@exa mple.org"])
def test_an_address_that_is_not_one_is_refused(bad):
    with pytest.raises(ValueError):
        address(bad)


def test_the_calendar_file_is_attached_with_its_method():
    composed = Composed(subject="Cancelled", text="t", html="<p>h</p>", calendar=b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n",
                        calendar_method="CANCEL")
    back = parsed(build_message(composed, to=address("ida@example.org"), sender=address("desk@clinic.example"),
                                message_id="<b@notifications.clinic>"))
    assert back.get_body(("plain",)).get_content().strip() == "t"
    assert back.get_body(("html",)).get_content().strip() == "<p>h</p>"
    [attachment] = list(back.iter_attachments())
    assert attachment.get_content_type() == "text/calendar" and attachment.get_param("method") == "CANCEL"


def test_an_smtp_error_is_described_without_its_text():
    import smtplib

    refused = smtplib.SMTPRecipientsRefused({"ida@example.org": (550, b"ida@example.org: no such user")})
    assert describe_error(refused) == "SMTPRecipientsRefused (SMTP 550)"
    assert describe_error(smtplib.SMTPDataError(554, b"message body quoted here")) == "SMTPDataError (SMTP 554)"
    assert describe_error(ConnectionRefusedError(111, "refused")) == "ConnectionRefusedError"


CLINIC = {"CLINIC_PHONE": "+1 212 555 0100", "CLINIC_ADDRESS": "1 Example Street, New York"}


def test_production_refuses_plain_smtp_to_another_host_naming_the_setting():
    with pytest.raises(ConfigurationError, match="SMTP_SECURITY"):
        load_mail_settings({"CLINIC_ENV": "production", "SMTP_HOST": "smtp.example.org", **CLINIC})
    for allowed in ({"SMTP_HOST": "smtp.example.org", "SMTP_SECURITY": "starttls"},
                    {"SMTP_HOST": "smtp.example.org", "SMTP_SECURITY": "tls", "SMTP_PORT": "465"},
                    {"SMTP_HOST": "localhost"}, {"SMTP_HOST": "::1"}):
        assert load_mail_settings({"CLINIC_ENV": "production", **CLINIC, **allowed}).smtp_host == allowed["SMTP_HOST"]


@pytest.mark.parametrize("missing", ["CLINIC_PHONE", "CLINIC_ADDRESS"])
def test_production_refuses_emails_that_cannot_say_where_the_clinic_is_or_whom_to_call(missing):
    given = {name: value for name, value in CLINIC.items() if name != missing}
    with pytest.raises(ConfigurationError, match=missing):
        load_mail_settings({"CLINIC_ENV": "production", "SMTP_HOST": "localhost", **given})
    # Development says so in the email instead.
    assert "not set" in (load_mail_settings(given).clinic_phone + load_mail_settings(given).clinic_address)
    # Development sends anywhere, as the mail sink of `make run` needs.
    assert load_mail_settings({"SMTP_HOST": "smtp.example.org"}).smtp_security == "none"


def test_mail_settings_read_their_variables_and_name_a_bad_one():
    settings = load_mail_settings({"ONCALL_EMAILS": "a@clinic.example, b@clinic.example", "SEND_RETRY_SECONDS": "1,2",
                                   "SMTP_PASSWORD": "secret"})
    assert settings.oncall_emails == ("a@clinic.example", "b@clinic.example")
    assert settings.send_retry_seconds == (1.0, 2.0)
    assert "secret" not in repr(settings)
    for variable, value in (("SMTP_SECURITY", "ssl"), ("SEND_RETRY_SECONDS", "5,x"), ("REMINDER_HOUR", "24"),
                            ("SMTP_PORT", "smtp")):
        with pytest.raises(ConfigurationError, match=variable):
            load_mail_settings({variable: value})


@pytest.mark.parametrize("raw, name, sender", [
    ("clinic@example.org", "", "clinic@example.org"),
    ("Headache Infusion Clinic <clinic@example.org>", "Headache Infusion Clinic", "clinic@example.org"),
    (" <clinic@example.org> ", "", "clinic@example.org"),
])
def test_the_sender_may_carry_a_display_name(raw, name, sender):
    mail = load_mail_settings({"MAIL_FROM": raw})
    assert (mail.mail_from_name, mail.mail_from) == (name, sender)


@pytest.mark.parametrize("raw", ["Clinic", "Clinic <clinic>", "Clinic <a@b> and more", "a@b@c", "Clinic <a@b", "a\r\n@b"])
def test_a_sender_that_is_not_an_address_stops_the_start_naming_mail_from(raw):
    # Refused once at start: accepted, it would make every email fail as it is sent.
    with pytest.raises(ConfigurationError, match="MAIL_FROM"):
        load_mail_settings({"MAIL_FROM": raw})
