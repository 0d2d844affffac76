"""Sending over TLS as production does: STARTTLS with a login, and implicit TLS, against a real SMTP
server on loopback whose certificate a test authority signed (SMTP_CA_FILE); a server whose
certificate is not trusted is not sent to."""

from __future__ import annotations

import ssl
import subprocess

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from clinic.localservers import free_port
from notifications.config import load_mail_settings
from notifications.mail import connect


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


class _Kept:
    def __init__(self):
        self.received = []

    async def handle_DATA(self, server, session, envelope):
        self.received.append((session.authenticated, envelope.rcpt_tos))
        return "250 OK"


def _login(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=auth_data.login == b"clinic" and auth_data.password == b"s3cret")


def _server_context(certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def _send(mail) -> None:
    with connect(mail) as smtp:
        smtp.sendmail(mail.mail_from, ["ana@example.org"], "Subject: test\r\n\r\nhello\r\n")


def test_starttls_with_a_login(certificate):
    kept = _Kept()
    server = Controller(kept, hostname="127.0.0.1", port=free_port(), tls_context=_server_context(certificate), require_starttls=True,
                        authenticator=_login, auth_require_tls=True)
    server.start()
    try:
        mail = load_mail_settings(env={"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(server.port), "SMTP_SECURITY": "starttls",
                                       "SMTP_USERNAME": "clinic", "SMTP_PASSWORD": "s3cret", "SMTP_CA_FILE": str(certificate[0])})
        _send(mail)
        assert kept.received == [(True, ["ana@example.org"])]
        untrusted = load_mail_settings(env={"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(server.port), "SMTP_SECURITY": "starttls"})
        with pytest.raises(ssl.SSLCertVerificationError):
            _send(untrusted)
        assert len(kept.received) == 1
    finally:
        server.stop()


def test_implicit_tls(certificate):
    kept = _Kept()
    server = Controller(kept, hostname="127.0.0.1", port=free_port(), ssl_context=_server_context(certificate))
    server.start()
    try:
        mail = load_mail_settings(env={"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(server.port), "SMTP_SECURITY": "tls",
                                       "SMTP_CA_FILE": str(certificate[0])})
        _send(mail)
        assert [rcpts for _, rcpts in kept.received] == [["ana@example.org"]]
    finally:
        server.stop()
