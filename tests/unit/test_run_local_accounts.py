"""make run's broker accounts follow the settings every service reads (CLINIC_BROKER_PUBLISHERS): the
passwords it keeps, the definitions the broker loads and the URLs the services get name the same accounts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import urlsplit

from clinic import broker_accounts
from clinic.config import OPERATOR_ACCOUNT, SERVICES, load_settings

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "run_local.py"


def _run_local():
    spec = importlib.util.spec_from_file_location("run_local", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_local_broker_accounts_are_the_ones_the_publishers_setting_names(tmp_path):
    run_local = _run_local()
    own = {service: f"lab-{service}" for service in SERVICES}
    settings = load_settings("cli", {"CLINIC_BROKER_PUBLISHERS": ",".join(f"{s}={a}" for s, a in own.items())})
    passwords = run_local._broker_passwords(tmp_path, settings)
    assert set(passwords) == {*own.values(), OPERATOR_ACCOUNT}
    definitions = broker_accounts.broker_definitions(settings, passwords, SERVICES)
    assert {user["name"] for user in definitions["users"]} == set(passwords)
    urls = run_local._use_own_accounts("amqp://127.0.0.1:5672/%2F", settings, passwords)
    assert {service: urlsplit(url).username for service, url in urls.items()} == own
    # Kept: a second start finds the same passwords.
    assert run_local._broker_passwords(tmp_path, settings) == passwords
