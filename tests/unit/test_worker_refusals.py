"""A worker that refuses its settings says so in one line, naming the setting, and exits 1 (as gunicorn's
master does for the web), so an operator reading `docker logs` or `podman logs` sees why at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clinic.config import SERVICES

BIN = Path(sys.executable).parent
PRODUCTION = {
    "CLINIC_ENV": "production",
    "RABBITMQ_URL": "amqp://clinic-records:Qw9-long-random@rabbitmq.invalid:5672/%2F",
    "CLINIC_OIDC_ISSUER": "https://id.example.org/realms/clinic",
    "CLINIC_OIDC_JWKS_URL": "https://id.example.org/realms/clinic/protocol/openid-connect/certs",
    # What notifications' emails must say, so that its refusal is the database URL's too.
    "CLINIC_ADDRESS": "1 Example Street",
    "CLINIC_PHONE": "+1 212 555 0100",
}


def _start(service: str, env: dict) -> subprocess.CompletedProcess:
    clean = {name: value for name, value in os.environ.items() if not name.startswith(("CLINIC_", "DATABASE_", "RABBITMQ_"))}
    return subprocess.run([str(BIN / f"{service}-worker")], env={**clean, **env}, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("service", SERVICES)
def test_a_worker_refusing_production_settings_says_which_in_one_line(service):
    done = _start(service, {**PRODUCTION, "DATABASE_URL": f"postgresql://{service}_service:example-password@db.invalid/{service}"})
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refusing to start: ") and "DATABASE_URL" in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_the_notifications_worker_refuses_a_sender_that_is_not_an_address_in_one_line(tmp_path):
    done = _start("notifications", {"CLINIC_ENV": "test", "CLINIC_VAR_DIR": str(tmp_path), "MAIL_FROM": "The Clinic"})
    assert done.returncode == 1, done
    assert done.stderr.strip().startswith("refusing to start: MAIL_FROM"), done.stderr
    assert "Traceback" not in done.stderr
