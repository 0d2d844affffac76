"""The rate limit and API document settings (clinic.config): checked when read, with defaults that
suit `make run`, and documents off in production unless asked for."""

from __future__ import annotations

import pytest

from clinic import limits
from clinic.config import ConfigurationError, load_settings


def test_the_defaults_count_in_memory_and_serve_the_documents_in_development():
    settings = load_settings("records", env={})
    assert (settings.rate_limit_per_subject, settings.rate_limit_per_address, settings.rate_limit_per_device,
            settings.rate_limit_patient_search) == ("600/minute", "1200/minute", "120/minute", "30/minute;300/hour")
    assert settings.rate_limit_storage_url == "memory://" and settings.trusted_proxies == 0 and settings.api_docs
    assert load_settings("records", env={"CLINIC_ENV": "test"}).api_docs


def test_production_serves_no_documents_unless_asked():
    assert not load_settings("records", env={"CLINIC_ENV": "production"}).api_docs
    assert load_settings("records", env={"CLINIC_ENV": "production", "CLINIC_API_DOCS": "on"}).api_docs
    assert not load_settings("records", env={"CLINIC_API_DOCS": "off"}).api_docs


@pytest.mark.parametrize("name, value", [
    ("CLINIC_RATE_LIMIT_PER_SUBJECT", "600 a minute"),
    ("CLINIC_RATE_LIMIT_PER_ADDRESS", "lots"),
    ("CLINIC_RATE_LIMIT_PER_DEVICE", "-1/minute"),
    ("CLINIC_RATE_LIMIT_PATIENT_SEARCH", "30/minute;300/fortnight"),
    ("CLINIC_RATE_LIMIT_STORAGE_URL", "memcached://cache:11211"),
    ("CLINIC_TRUSTED_PROXIES", "-1"),
    ("CLINIC_TRUSTED_PROXIES", "all"),
    ("CLINIC_API_DOCS", "yes"),
])
def test_a_malformed_setting_refuses_to_start_naming_it(name, value):
    with pytest.raises(ConfigurationError, match=name):
        load_settings("records", env={name: value})


def test_limits_are_read_in_flask_limiters_notation():
    settings = load_settings("records", env={"CLINIC_RATE_LIMIT_PATIENT_SEARCH": "10 per minute; 100/hour",
                                             "CLINIC_RATE_LIMIT_STORAGE_URL": "redis://redis:6379/0",
                                             "CLINIC_TRUSTED_PROXIES": "1"})
    assert settings.rate_limit_patient_search == "10 per minute; 100/hour"
    assert (settings.rate_limit_storage_url, settings.trusted_proxies) == ("redis://redis:6379/0", 1)


def test_limits_are_sorted_once_shortest_window_first_whatever_order_they_are_written_in():
    settings = load_settings("records", env={"CLINIC_RATE_LIMIT_PATIENT_SEARCH": "300/hour;30/minute"})
    assert [str(item) for item in limits._Limits(settings).patient_search] == ["30 per 1 minute", "300 per 1 hour"]


def test_deploy_says_how_many_proxies_stand_in_front():
    # Behind the Kubernetes ingress every client would share the ingress's address (and one allowance)
    # unless its X-Forwarded-For entry is read; compose publishes the ports directly, so none is believed.
    from pathlib import Path

    import yaml

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    kubernetes = yaml.safe_load((deploy / "k8s" / "base" / "config.yaml").read_text())["data"]
    compose = yaml.safe_load((deploy / "docker-compose.yml").read_text())["x-clinic-environment"]
    for environment, proxies in ((kubernetes, 1), (compose, 0)):
        assert load_settings("records", env={"CLINIC_TRUSTED_PROXIES": environment["CLINIC_TRUSTED_PROXIES"]}).trusted_proxies == proxies
