import pytest

from clinic import auth
from clinic.config import DEVELOPMENT_ISSUER, ConfigurationError, load_settings
from clinic.errors import Unauthorized


@pytest.fixture
def settings():
    return load_settings("records", env={})


def test_a_token_carries_its_subject_and_roles(settings):
    principal = auth.verify_token(settings, auth.issue_token(settings, "nurse-7", ["nurse"]))
    assert principal == auth.Principal("nurse-7", ("nurse",))
    assert principal.has_any(["nurse", "admin"]) and not principal.has_any(["admin"])


def test_unknown_roles_cannot_be_issued(settings):
    with pytest.raises(ValueError):
        auth.issue_token(settings, "x", ["janitor"])


@pytest.mark.parametrize("header", [None, "", "Token abc", "Bearer ", "Bearer"])
def test_the_authorization_header_must_be_a_bearer_token(header):
    with pytest.raises(Unauthorized):
        auth.bearer_token(header)


def test_device_tokens_are_stored_as_digests_and_compared_safely():
    token = auth.new_device_token()
    stored = auth.hash_device_token(token)
    assert token not in stored and len(stored) == 64
    assert auth.device_token_matches(token, stored)
    assert not auth.device_token_matches(token + "x", stored)


def test_development_runs_on_embedded_defaults():
    settings = load_settings("scheduling", env={})
    assert settings.oidc_issuer == DEVELOPMENT_ISSUER and settings.oidc_audience == "clinic-scheduling"
    assert settings.oidc_jwks_url.startswith("file://") and settings.oidc_jwks_url.endswith("/var/identity/jwks.json")
    assert settings.accepts_development_tokens
    assert settings.database_url.startswith("sqlite:///") and settings.database_url.endswith("var/scheduling.db")
    names = (settings.queue, settings.dead_letter_queue, settings.exchange)
    assert names == ("clinic.scheduling", "clinic.scheduling.dead", "clinic.events")
    settings.check_safe_to_run()


def test_a_malformed_number_in_the_environment_is_named():
    with pytest.raises(ConfigurationError, match="CLINIC_PREFETCH"):
        load_settings("records", env={"CLINIC_PREFETCH": "lots"})


def test_an_unknown_clinic_time_zone_is_refused_at_start_up():
    with pytest.raises(ConfigurationError, match="CLINIC_TIMEZONE"):
        load_settings("scheduling", env={"CLINIC_TIMEZONE": "America/Nowhere"})
    assert load_settings("scheduling", env={"CLINIC_TIMEZONE": "Europe/Lisbon"}).clinic_timezone == "Europe/Lisbon"


@pytest.mark.parametrize("value", ["Production", "prod", "staging", "production ", " production", "PRODUCTION", "", "dev"])
def test_an_environment_that_is_not_exactly_one_of_the_three_refuses_to_start(value):
    with pytest.raises(ConfigurationError, match="CLINIC_ENV must be exactly development, test or production"):
        load_settings("records", env={"CLINIC_ENV": value})


@pytest.mark.parametrize("value", ["development", "test", "production"])
def test_each_of_the_three_environments_is_read_as_given(value):
    assert load_settings("records", env={"CLINIC_ENV": value}).environment == value


def test_an_unset_environment_is_development():
    assert load_settings("records", env={}).environment == "development"


def test_notifications_refuses_a_misspelt_production_too():
    from notifications.config import load_mail_settings

    with pytest.raises(ConfigurationError, match="CLINIC_ENV"):
        load_mail_settings({"CLINIC_ENV": "Production", "SMTP_HOST": "smtp.example.org"})
