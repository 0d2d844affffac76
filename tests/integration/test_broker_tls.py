"""The broker over TLS, as the production Kubernetes overlay connects: amqps:// verified against the
clinic's own CA (CLINIC_RABBITMQ_CA_FILE), and refused without it."""

from __future__ import annotations

import ssl
import subprocess

import pytest

from clinic import bus
from clinic.config import load_settings
from clinic.localservers import LocalRabbitMQ, free_port


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    """A CA of the clinic's own and a broker certificate it signed for 127.0.0.1."""
    directory = tmp_path_factory.mktemp("broker-tls")
    ca_key, ca, key, request, cert = (directory / name for name in ("ca.key", "ca.crt", "broker.key", "broker.csr", "broker.crt"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=clinic test CA",
             "-keyout", str(ca_key), "-out", str(ca))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(request))
    extensions = directory / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "1",
             "-extfile", str(extensions), "-out", str(cert))
    return ca, cert, key


class _TLSRabbitMQ(LocalRabbitMQ):
    """A node that also listens for amqps on `tls_port`, with the certificate given."""

    def __init__(self, base_dir, authority):
        super().__init__(base_dir)
        self.tls_port = free_port()
        ca, cert, key = authority
        self.tls_config = (f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\nssl_options.cacertfile = {ca}\n"
                           f"ssl_options.certfile = {cert}\nssl_options.keyfile = {key}\nssl_options.verify = verify_none\n")

    def _env(self) -> dict:
        # LocalRabbitMQ writes its rabbitmq.conf as it launches; this node reads a copy with the TLS listener.
        env = super()._env()
        plain = self.base / "rabbitmq.conf"
        tls = self.base / "rabbitmq-tls.conf"
        tls.write_text(plain.read_text() + self.tls_config)
        env["RABBITMQ_CONFIG_FILE"] = str(tls)
        return env


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory, authority):
    server = _TLSRabbitMQ(tmp_path_factory.mktemp("tls-rabbitmq"), authority)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _settings(server, ca_file: str | None):
    env = {"RABBITMQ_URL": f"amqps://guest:guest@127.0.0.1:{server.tls_port}/%2F"}
    if ca_file:
        env["CLINIC_RABBITMQ_CA_FILE"] = ca_file
    return load_settings("records", env=env)


def test_amqps_verifies_the_broker_against_the_clinic_ca(tls_broker, authority):
    ca, _, _ = authority
    with bus.connect(_settings(tls_broker, str(ca))) as connection:
        channel = connection.channel()
        assert channel.is_open
        assert connection._impl.params.ssl_options is not None


def test_amqps_refuses_a_broker_its_cas_do_not_vouch_for(tls_broker):
    # Without the clinic's CA the system's authorities are asked, and none of them signed this broker.
    with pytest.raises(ssl.SSLCertVerificationError):
        bus.connect(_settings(tls_broker, None))
