"""`clinic migrate` refuses production's development defaults as the services do (Settings.check_safe_to_run),
before it touches a database or a broker."""

from __future__ import annotations

import pytest

from clinic import cli

# A production environment that every check accepts; each case below spoils one setting.
PRODUCTION = {
    "CLINIC_ENV": "production",
    "DATABASE_URL": "postgresql://records:kT7-long-random@db.invalid:5432/records",
    "RABBITMQ_URL": "amqp://clinic-records:Qw9-long-random@mq.invalid:5672/%2F",
    "CLINIC_OIDC_ISSUER": "https://id.example.org/realms/clinic",
    "CLINIC_OIDC_JWKS_URL": "https://id.example.org/realms/clinic/protocol/openid-connect/certs",
    # One attempt: nothing answers at db.invalid.
    "CLINIC_MIGRATE_WAIT_SECONDS": "0",
}


@pytest.mark.parametrize("changes, setting", [
    # What the review ran: the guest broker account and no DATABASE_URL (a throwaway SQLite file).
    ({"RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:5672/%2F", "DATABASE_URL": None}, "DATABASE_URL"),
    ({"RABBITMQ_URL": "amqp://guest:guest@mq.invalid:5672/%2F"}, "RABBITMQ_URL"),
    ({"DATABASE_URL": "postgresql://postgres:postgres@db.invalid/records"}, "DATABASE_URL"),
    ({"CLINIC_OIDC_JWKS_URL": None}, "CLINIC_OIDC_JWKS_URL"),
])
def test_migrate_refuses_production_on_development_defaults_and_touches_nothing(changes, setting, tmp_path,
                                                                                monkeypatch, capsys):
    for name in ("DATABASE_URL", "RABBITMQ_URL", "CLINIC_OIDC_ISSUER", "CLINIC_OIDC_JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLINIC_VAR_DIR", str(tmp_path))
    for name, value in {**PRODUCTION, **changes}.items():
        if value is not None:
            monkeypatch.setenv(name, value)

    assert cli.main(["migrate", "records"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clinic: CLINIC_ENV=production") and setting in err
    assert list(tmp_path.iterdir()) == [], "a database file was made"


def test_migrate_in_production_gets_past_the_checks_on_its_own_settings(tmp_path, monkeypatch, capsys):
    """The same settings, unspoilt, are not refused: it goes on to the database (which does not exist here)."""
    monkeypatch.setenv("CLINIC_VAR_DIR", str(tmp_path))
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(Exception) as unreachable:  # noqa: PT011 - whatever the driver raises for db.invalid
        cli.main(["migrate", "records"])
    assert "CLINIC_ENV=production" not in str(unreachable.value)
    assert "CLINIC_ENV=production" not in capsys.readouterr().err
