"""deploy/'s settings: every secret in deploy/clinic.env.example is refused in production (so a copied
example never runs a clinic) and accepted under test; the compose file documents every variable it reads
in the example, and gives each service its own database login role and its migration the owner's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from clinic.config import SERVICES, ConfigurationError, check_deploy_secrets, load_settings, read_broker_passwords

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXAMPLE = DEPLOY / "clinic.env.example"
COMPOSE_FILES = (DEPLOY / "docker-compose.yml", DEPLOY / "compose.debian-images.yml")

# A production environment that every check accepts; each case puts one example value into it.
PRODUCTION = {
    "CLINIC_ENV": "production",
    "DATABASE_URL": "postgresql://records_service:kT7-long-random@postgres:5432/records",
    "RABBITMQ_URL": "amqp://clinic-records:Qw9-long-random@rabbitmq:5672/%2F",
    "CLINIC_OIDC_ISSUER": "https://id.example.org/realms/clinic",
    "CLINIC_OIDC_JWKS_URL": "https://id.example.org/realms/clinic/protocol/openid-connect/certs",
}


def _example() -> dict[str, str]:
    """NAME=value lines of the example file (commented-out ones too: they are documented settings)."""
    values = {}
    for line in EXAMPLE.read_text().splitlines():
        found = re.fullmatch(r"#? ?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if found:
            values[found[1]] = found[2]
    return values


def _secrets() -> dict[str, str]:
    return {name: value for name, value in _example().items() if "PASSWORD" in name or "SECRET" in name}


def test_every_secret_in_the_example_carries_the_marker():
    secrets = _secrets()
    # The four services' two database roles and broker account, the operator, PostgreSQL's and Keycloak's.
    assert len(secrets) >= 4 * 3 + 4
    assert [name for name, value in secrets.items() if not value.startswith("example-")] == []


@pytest.mark.parametrize("name", sorted(_secrets()))
def test_production_refuses_each_example_secret_wherever_the_clinic_reads_it(name):
    value = _secrets()[name]
    for setting, url in (("DATABASE_URL", f"postgresql://records_service:{value}@postgres:5432/records"),
                         ("DATABASE_URL", f"postgresql://records_owner@postgres:5432/records?password={value}"),
                         ("RABBITMQ_URL", f"amqp://clinic-records:{value}@rabbitmq:5672/%2F"),
                         ("CLINIC_OPERATOR_RABBITMQ_URL", f"amqp://clinic-operator:{value}@rabbitmq:5672/%2F")):
        with pytest.raises(ConfigurationError, match=setting):
            load_settings("records", env={**PRODUCTION, setting: url}).check_safe_to_run()
        load_settings("records", env={**PRODUCTION, "CLINIC_ENV": "test", setting: url}).check_safe_to_run()
    accounts = ("clinic-records", "clinic-operator")
    passwords = {"CLINIC_BROKER_PASSWORD_CLINIC_RECORDS": "Qw9-long-random", "CLINIC_BROKER_PASSWORD_CLINIC_OPERATOR": value}
    with pytest.raises(ConfigurationError, match="CLINIC_BROKER_PASSWORD_CLINIC_OPERATOR"):
        read_broker_passwords({**passwords, "CLINIC_ENV": "production"}, accounts)
    assert read_broker_passwords({**passwords, "CLINIC_ENV": "test"}, accounts)["clinic-operator"] == value


def test_the_secrets_check_refuses_every_example_password_in_production_naming_it():
    # What compose's rabbitmq-accounts step runs before PostgreSQL and Keycloak start (clinic check-secrets):
    # their own passwords (the superuser's, Keycloak's administrator's) are checked by nothing else.
    example = {name: value for name, value in _secrets().items() if name.endswith("_PASSWORD")}
    assert {"POSTGRES_PASSWORD", "KEYCLOAK_ADMIN_PASSWORD", "KEYCLOAK_DATABASE_PASSWORD"} <= set(example)
    own = {name: f"own-{index}-long-random" for index, name in enumerate(example)}
    for name, value in example.items():
        with pytest.raises(ConfigurationError, match=name):
            check_deploy_secrets({**own, name: value, "CLINIC_ENV": "production"})
    assert set(check_deploy_secrets({**own, "CLINIC_ENV": "production"})) == set(example)
    assert set(check_deploy_secrets({**example, "CLINIC_ENV": "test"})) == set(example)


def test_the_secrets_check_runs_before_anything_that_takes_a_password_starts():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    assert "clinic check-secrets" in " ".join(compose["rabbitmq-accounts"]["entrypoint"])
    for server in ("postgres", "rabbitmq", "keycloak"):
        assert compose[server]["depends_on"]["rabbitmq-accounts"] == {"condition": "service_completed_successfully"}, server
    # Every password variable the compose file reads anywhere reaches the check.
    read = set(re.findall(r"\$\{([A-Z0-9_]+_PASSWORD)\b", (DEPLOY / "docker-compose.yml").read_text()))
    checked = set(re.findall(r"\$\{([A-Z0-9_]+_PASSWORD)\b", " ".join(compose["rabbitmq-accounts"]["environment"].values())))
    assert read and read <= checked, read - checked


def test_production_accepts_passwords_of_their_own():
    load_settings("records", env=PRODUCTION).check_safe_to_run()


def test_the_marker_is_found_in_any_case():
    url = "postgresql://records_service:Example-records@postgres:5432/records"
    with pytest.raises(ConfigurationError, match="clinic.env.example"):
        load_settings("records", env={**PRODUCTION, "DATABASE_URL": url}).check_safe_to_run()


@pytest.mark.parametrize("role", ["Records_service", "records-service", "records; DROP TABLE x", "1records", "r" * 64])
def test_the_service_role_must_be_a_plain_role_name(role):
    with pytest.raises(ConfigurationError, match="CLINIC_DATABASE_SERVICE_ROLE"):
        load_settings("records", env={"CLINIC_DATABASE_SERVICE_ROLE": role})


def test_the_service_role_is_read():
    assert load_settings("records", env={"CLINIC_DATABASE_SERVICE_ROLE": "records_service"}).database_service_role == "records_service"
    assert load_settings("records", env={}).database_service_role == ""


def test_the_example_documents_every_variable_compose_reads():
    read = set()
    for path in COMPOSE_FILES:
        read |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", path.read_text()))
    assert sorted(read - set(_example())) == []


def test_services_log_in_as_their_service_role_and_migrations_as_the_owner():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    for service in SERVICES:
        for role in ("web", "worker"):
            environment = compose[f"{service}-{role}"]["environment"]
            assert environment["DATABASE_URL"].startswith(f"postgresql://{service}_service:")
            assert environment["RABBITMQ_URL"].startswith(f"amqp://clinic-{service}:")
            assert "CLINIC_DATABASE_SERVICE_ROLE" not in environment
        migration = compose[f"{service}-migrate"]["environment"]
        assert migration["DATABASE_URL"].startswith(f"postgresql://{service}_owner:")
        assert migration["CLINIC_DATABASE_SERVICE_ROLE"] == f"{service}_service"
        assert compose[f"{service}-web"]["ports"] == [
            f"${{CLINIC_PUBLISH_ADDRESS:-127.0.0.1}}:${{CLINIC_{service.upper()}_PORT:-{8101 + SERVICES.index(service)}}}:"
            f"{8101 + SERVICES.index(service)}"]


def test_every_long_running_container_restarts_and_is_health_checked():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for name, service in compose.items():
        if name.endswith("-migrate") or name == "rabbitmq-accounts":
            assert service["restart"] == "no"
            continue
        assert service["restart"] == "unless-stopped", name
        # The web apps' check is the image's own HEALTHCHECK.
        assert service.get("healthcheck", {}).get("test") or (name.endswith("-web") and "HEALTHCHECK" in dockerfile), name
