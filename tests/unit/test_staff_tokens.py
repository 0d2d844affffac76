"""Staff tokens: every rule a token must pass, the development key pair, `clinic token`'s limits, and the
settings production refuses (issue 14, findings 1 and 2).

Past 400 lines: each rule is a short case, and a reader checking what a token must pass finds them all
here, beside the production refusals that decide which keys a service may trust."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from clinic import auth, cli, identity
from clinic.config import DEVELOPMENT_ISSUER, ConfigurationError, load_settings
from clinic.errors import Forbidden, Unauthorized
from tests.support.tokens import claims_for, hand_made

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path):
    """records' settings on a development key pair of the test's own."""
    return load_settings("records", env={"CLINIC_VAR_DIR": str(tmp_path)})


def kid_of(settings) -> str:
    return json.loads(identity.development_jwks_path(settings).read_text())["keys"][0]["kid"]


# --- what a token must be ----------------------------------------------------------------------


def test_a_development_token_names_its_subject_and_staff_roles(settings):
    token = auth.issue_token(settings, "nurse-7", ["nurse", "admin"])
    assert auth.verify_token(settings, token) == auth.Principal("nurse-7", ("nurse", "admin"))
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == kid_of(settings)


def test_hs256_signed_with_the_public_key_is_refused(settings):
    auth.issue_token(settings, "x", ["nurse"])  # the pair exists
    public_jwks = identity.development_jwks_path(settings).read_bytes()
    token = hand_made({"alg": "HS256", "typ": "JWT", "kid": kid_of(settings)}, claims_for(settings, realm_access={"roles": ["admin"]}),
                      lambda data: hmac.new(public_jwks, data, hashlib.sha256).digest())
    with pytest.raises(Unauthorized, match="RS256 or ES256"):
        auth.verify_token(settings, token)


def test_an_unsigned_token_is_refused(settings):
    auth.issue_token(settings, "x", ["nurse"])
    token = hand_made({"alg": "none", "kid": kid_of(settings)}, claims_for(settings), lambda data: b"")
    with pytest.raises(Unauthorized, match="RS256 or ES256"):
        auth.verify_token(settings, token)


@pytest.mark.parametrize("algorithm, make_key", [("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
                                                  ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))])
def test_a_token_signed_by_another_key_under_our_kid_is_refused(settings, algorithm, make_key):
    auth.issue_token(settings, "x", ["nurse"])
    token = jwt.encode(claims_for(settings), make_key(), algorithm=algorithm, headers={"kid": kid_of(settings)})
    with pytest.raises(Unauthorized):
        auth.verify_token(settings, token)


@pytest.mark.parametrize("headers, message", [({"kid": "made-up"}, "does not publish"), ({"kid": None}, "does not publish")])
def test_an_unknown_or_missing_kid_is_refused(settings, headers, message):
    token = identity.sign_development_token(settings, claims_for(settings), headers)
    with pytest.raises(Unauthorized, match=message):
        auth.verify_token(settings, token)


def test_an_expired_token_is_refused_beyond_the_clock_skew_only(settings):
    now = int(time.time())
    within = identity.sign_development_token(settings, claims_for(settings, iat=now - 600, exp=now - 10))
    assert auth.verify_token(settings, within).subject == "nurse-7"  # 10 s late: within the 30 s skew
    late = identity.sign_development_token(settings, claims_for(settings, iat=now - 600, exp=now - 60))
    with pytest.raises(Unauthorized, match="expired"):
        auth.verify_token(settings, late)


def test_a_token_issued_in_the_future_is_refused(settings):
    now = int(time.time())
    token = identity.sign_development_token(settings, claims_for(settings, iat=now + 120, exp=now + 600))
    with pytest.raises(Unauthorized, match="not valid yet"):
        auth.verify_token(settings, token)


def test_a_token_living_longer_than_the_maximum_is_refused(settings):
    now = int(time.time())
    longest = settings.token_max_lifetime_minutes * 60
    assert auth.verify_token(settings, identity.sign_development_token(settings, claims_for(settings, iat=now, exp=now + longest)))
    token = identity.sign_development_token(settings, claims_for(settings, iat=now, exp=now + longest + 1))
    with pytest.raises(Unauthorized, match="longer than the 720 minutes"):
        auth.verify_token(settings, token)


def test_a_token_that_expires_before_it_was_issued_is_refused(settings):
    # Both times within the clock skew of now, so that only their order is wrong.
    now = int(time.time())
    token = identity.sign_development_token(settings, claims_for(settings, iat=now + 20, exp=now + 10))
    with pytest.raises(Unauthorized, match="expires before it was issued"):
        auth.verify_token(settings, token)


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("spelt", ["a numeric string", "true", "a list"])
def test_a_time_claim_that_is_not_a_json_number_is_refused(settings, name, spelt):
    now = int(time.time())
    value = {"exp": now + 600, "iat": now, "nbf": now}[name]
    wrong = {"a numeric string": str(value), "true": True, "a list": [value]}[spelt]
    token = identity.sign_development_token(settings, claims_for(settings, **{"nbf": now, name: wrong}))
    # PyJWT refuses a list itself, and reads true as 1 (long expired); a numeric string it would take.
    with pytest.raises(Unauthorized, match=f"{name} claim" if spelt == "a numeric string" else None):
        auth.verify_token(settings, token)
    # The same token with the number itself is good: only the type was wrong.
    assert auth.verify_token(settings, identity.sign_development_token(settings, claims_for(settings, **{"nbf": now, name: value})))


def test_a_time_claim_given_as_a_fraction_of_a_second_is_a_number(settings):
    now = time.time()
    token = identity.sign_development_token(settings, claims_for(settings, iat=now, nbf=now, exp=now + 600.5))
    assert auth.verify_token(settings, token).subject == "nurse-7"


@pytest.mark.parametrize("changes, message", [
    ({"iss": "https://elsewhere.example.org/realms/clinic"}, "another issuer"),
    ({"aud": "clinic-sessions"}, "not meant for this service"),
    ({"aud": ["clinic-sessions", "clinic-scheduling"]}, "not meant for this service"),
    ({"sub": None}, "no sub claim"), ({"iat": None}, "no iat claim"), ({"exp": None}, "no exp claim"),
    ({"iss": None}, "no iss claim"), ({"aud": None}, "no aud claim"), ({"sub": "  "}, "subject is empty"),
])
def test_a_token_missing_or_mismatching_a_required_claim_is_refused(settings, changes, message):
    token = identity.sign_development_token(settings, claims_for(settings, **changes))
    with pytest.raises(Unauthorized, match=message):
        auth.verify_token(settings, token)


def test_one_token_may_name_several_audiences(settings):
    token = identity.sign_development_token(settings, claims_for(settings, aud=["clinic-sessions", settings.oidc_audience]))
    assert auth.verify_token(settings, token).subject == "nurse-7"


@pytest.mark.parametrize("path, claims, roles", [
    ("realm_access.roles", {"realm_access": {"roles": ["nurse", "janitor", "admin"]}}, ("nurse", "admin")),
    ("realm_access.roles", {"realm_access": {"roles": "nurse"}}, ()),
    ("realm_access.roles", {"realm_access": ["nurse"]}, ()),
    ("realm_access.roles", {"realm_access": None}, ()),
    ("realm_access.roles", {}, ()),
    ("roles", {"roles": ["front_desk"]}, ("front_desk",)),  # Entra ID app roles, Okta
    ("https://clinic.example.org/roles", {"https://clinic.example.org/roles": ["neurologist"]}, ("neurologist",)),  # Auth0
    ("resource_access.clinic.roles", {"resource_access": {"clinic": {"roles": ["admin"]}}}, ("admin",)),
    # A top-level claim spelt like the dotted path is not the provider's nested claim, and never wins over it.
    ("realm_access.roles", {"realm_access.roles": ["admin"], "realm_access": {"roles": ["nurse"]}}, ("nurse",)),
    ("realm_access.roles", {"realm_access.roles": ["admin"]}, ()),
    # A URL is one claim name: its dots are the host's, never a path into nested claims.
    ("https://clinic.example.org/roles", {"https://clinic": {"example": {"org/roles": ["admin"]}}}, ()),
])
def test_roles_are_read_from_the_configured_claim_and_anything_else_means_none(settings, path, claims, roles):
    settings = settings.with_changes(oidc_roles_claim=path)
    token = identity.sign_development_token(settings, {**claims_for(settings, realm_access=None), **claims})
    assert auth.verify_token(settings, token) == auth.Principal("nurse-7", roles)


# --- the cache of verified tokens, and a rotated development pair ------------------------------


def test_a_verified_token_is_checked_again_only_when_it_expires_or_the_settings_change(settings, monkeypatch):
    token = auth.issue_token(settings, "desk-3", ["front_desk"], ttl_minutes=1)
    assert auth.verify_token(settings, token).subject == "desk-3"
    checked = []
    verify = identity.TokenVerifier.verify
    monkeypatch.setattr(identity.TokenVerifier, "verify", lambda self, token: checked.append(token) or verify(self, token))
    assert auth.verify_token(settings, token).subject == "desk-3"
    assert checked == []  # the second time from what was verified
    with pytest.raises(Unauthorized, match="not meant for this service"):
        auth.verify_token(settings.with_changes(oidc_audience="clinic-sessions"), token)
    with pytest.raises(Unauthorized, match="another issuer"):
        auth.verify_token(settings.with_changes(oidc_issuer="https://elsewhere.example.org"), token)
    later = time.time() + 61
    monkeypatch.setattr(auth.time, "time", lambda: later)
    auth.verify_token(settings, token)
    assert checked[-1] == token  # expired by the cache's clock: checked again (PyJWT's clock refuses it then)


def test_a_rotated_development_pair_is_read_without_a_restart_and_the_old_key_stops_working(settings):
    old = auth.issue_token(settings, "desk-3", ["front_desk"])
    assert auth.verify_token(settings, old).subject == "desk-3"
    jwks = identity.development_jwks_path(settings)
    (jwks.parent / identity.DEVELOPMENT_KEY_FILE).unlink()
    jwks.unlink()
    new = auth.issue_token(settings, "desk-4", ["front_desk"])
    assert jwt.get_unverified_header(new)["kid"] != jwt.get_unverified_header(old)["kid"]
    assert auth.verify_token(settings, new).subject == "desk-4"
    with pytest.raises(Unauthorized, match="does not publish"):
        auth.verify_token(settings, old)  # verified before, but its key is gone


def test_roles_are_compared_with_the_access_tables_set_and_named_in_their_usual_order():
    nurse = auth.Principal("nurse-7", ("nurse",))
    assert nurse.has_any(frozenset({"nurse", "device"})) and nurse.has_any(("admin", "nurse"))
    assert not nurse.has_any(frozenset({"admin", "neurologist"}))
    with pytest.raises(Forbidden) as refused:
        auth.refuse_unless(nurse, frozenset({"admin", "device", "front_desk"}))
    assert refused.value.details["required_roles"] == ["front_desk", "admin", "device"]


def test_a_known_key_costs_a_look_at_the_jwks_file_at_most_once_a_second(settings, monkeypatch):
    # Every request asks for its token's key, even for a token verified before: no os.stat each time.
    auth.issue_token(settings, "desk-3", ["front_desk"])  # makes the development pair
    jwks = identity.development_jwks_path(settings)
    looked, now = [], [100.0]
    monkeypatch.setattr(identity, "os", SimpleNamespace(stat=lambda path: looked.append(path) or os.stat(path)))
    monkeypatch.setattr(identity, "time", SimpleNamespace(monotonic=lambda: now[0]))
    keys = identity.FileKeys(jwks)
    for _ in range(100):
        assert keys.key_for(kid_of(settings)) is not None
    assert looked == [jwks]
    assert keys.key_for("a-new-kid") is None and len(looked) == 2  # a kid it does not hold: looked at at once
    now[0] += identity.FileKeys.CHECK_EVERY_SECONDS
    assert keys.key_for(kid_of(settings)) is not None and len(looked) == 3


def test_tokens_of_another_development_pair_are_refused(settings, tmp_path):
    other = load_settings("records", env={"CLINIC_VAR_DIR": str(tmp_path / "elsewhere")})
    auth.issue_token(settings, "x", ["nurse"])
    with pytest.raises(Unauthorized, match="does not publish"):
        auth.verify_token(settings, auth.issue_token(other, "someone", ["admin"]))


# --- the development key pair ------------------------------------------------------------------


def test_the_development_pair_is_private_and_named_by_its_thumbprint(settings):
    private_key = identity.development_key_pair(identity.development_jwks_path(settings))
    key_file = identity.development_jwks_path(settings).parent / identity.DEVELOPMENT_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    published = json.loads(identity.development_jwks_path(settings).read_text())["keys"]
    assert [entry["kid"] for entry in published] == [identity.thumbprint(jwt.algorithms.ECAlgorithm.to_jwk(
        private_key.public_key(), as_dict=True))]
    assert "d" not in published[0]  # the public half only


def test_processes_creating_the_pair_at_once_end_with_one_pair(tmp_path):
    jwks = tmp_path / "identity" / "jwks.json"
    program = ("import sys, jwt; from clinic import identity; "
               "key = identity.development_key_pair(sys.argv[1]); "
               "print(identity.public_jwks(key.public_key())['keys'][0]['kid'])")
    processes = [subprocess.Popen([sys.executable, "-c", program, str(jwks)], stdout=subprocess.PIPE, text=True)
                 for _ in range(8)]
    kids = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert all(process.returncode == 0 for process in processes)
    assert len(kids) == 1 and kids == {json.loads(jwks.read_text())["keys"][0]["kid"]}
    assert sorted(path.name for path in jwks.parent.iterdir()) == [identity.DEVELOPMENT_KEY_FILE, "jwks.json"]


@pytest.mark.parametrize("ttl", [0, -5, 721, 10 * 365 * 24 * 60])
def test_issue_token_refuses_a_lifetime_outside_one_minute_to_the_maximum(settings, ttl):
    with pytest.raises(ValueError, match="from 1 to 720 minutes"):
        auth.issue_token(settings, "x", ["nurse"], ttl_minutes=ttl)


def test_issue_token_signs_only_for_a_development_jwks_outside_production(settings):
    with pytest.raises(ValueError, match="not a development JWKS"):
        auth.issue_token(settings.with_changes(oidc_jwks_url="https://id.example.org/certs"), "x", ["nurse"])
    with pytest.raises(ValueError, match="production"):
        auth.issue_token(settings.with_changes(environment="production"), "x", ["nurse"])
    with pytest.raises(ValueError, match="subject"):
        auth.issue_token(settings, "", ["nurse"])


# --- `clinic token` ----------------------------------------------------------------------------


@pytest.fixture
def development_cli(tmp_path, monkeypatch):
    for name in ("CLINIC_ENV", "CLINIC_OIDC_AUDIENCE", "CLINIC_OIDC_JWKS_URL", "CLINIC_OIDC_ISSUER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLINIC_VAR_DIR", str(tmp_path))
    return tmp_path


def test_clinic_token_is_usable_on_every_service_of_the_demo(development_cli, capsys):
    assert cli.main(["token", "--role", "front_desk", "--subject", "desk-1"]) == 0
    token = capsys.readouterr().out.strip()
    for service in cli.SERVICES:
        assert auth.verify_token(load_settings(service), token) == auth.Principal("desk-1", ("front_desk",))
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 720 * 60


def test_clinic_token_for_one_audience_is_refused_by_the_others(development_cli, capsys):
    assert cli.main(["token", "--role", "nurse", "--audience", "clinic-sessions", "--ttl-minutes", "5"]) == 0
    token = capsys.readouterr().out.strip()
    assert auth.verify_token(load_settings("sessions"), token).roles == ("nurse",)
    with pytest.raises(Unauthorized, match="not meant for this service"):
        auth.verify_token(load_settings("records"), token)


@pytest.mark.parametrize("arguments, message", [
    (["--ttl-minutes", "0"], "from 1 to 720 minutes"), (["--ttl-minutes", "-30"], "from 1 to 720 minutes"),
    (["--ttl-minutes", "5256000"], "from 1 to 720 minutes"), (["--subject", ""], "needs a subject"),
])
def test_clinic_token_refuses_what_it_cannot_sign(development_cli, capsys, arguments, message):
    assert cli.main(["token", "--role", "admin", *arguments]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err


def test_clinic_token_refuses_an_unknown_role(development_cli, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["token", "--role", "janitor"])
    assert stopped.value.code == 2


def test_clinic_token_is_refused_in_production(development_cli, monkeypatch, capsys):
    monkeypatch.setenv("CLINIC_ENV", "production")
    assert cli.main(["token", "--role", "admin"]) == 2
    assert "refused when CLINIC_ENV is production" in capsys.readouterr().err


# --- what production refuses ------------------------------------------------------------------

PRODUCTION = {
    "CLINIC_ENV": "production",
    "DATABASE_URL": "postgresql://records:kT7-long-random@db.internal:5432/records",
    "RABBITMQ_URL": "amqp://clinic-records:Qw9-long-random@mq.internal:5672/%2F",
    "CLINIC_OIDC_ISSUER": "https://id.example.org/realms/clinic",
    "CLINIC_OIDC_JWKS_URL": "https://id.example.org/realms/clinic/protocol/openid-connect/certs",
}


def test_production_runs_on_its_own_settings():
    settings = load_settings("records", env=PRODUCTION)
    settings.check_safe_to_run()
    assert not settings.accepts_development_tokens


def test_a_url_claim_is_issued_and_read_as_one_claim(settings):
    settings = settings.with_changes(oidc_roles_claim="https://clinic.example.org/roles")
    assert auth.roles_claim(settings.oidc_roles_claim, ["admin"]) == {"https://clinic.example.org/roles": ["admin"]}
    assert auth.verify_token(settings, auth.issue_token(settings, "admin-1", ["admin"])).roles == ("admin",)


@pytest.mark.parametrize("changes", [
    {"CLINIC_OIDC_JWKS_URL": "HTTPS://id.example.org/realms/clinic/protocol/openid-connect/certs"},  # schemes have no case
    {"DATABASE_URL": "postgresql+psycopg://records@db.internal/records?sslmode=verify-full&sslcert=/certs/records.crt"
                     "&sslkey=/certs/records.key"},  # a client certificate stands in for a password
    {"DATABASE_URL": "postgresql://records@db.internal/records?password=kT7-long-random"},
])
def test_production_accepts_what_each_client_reads_as_safe(changes):
    settings = load_settings("records", env={**PRODUCTION, **changes})
    settings.check_safe_to_run()
    assert not settings.accepts_development_tokens


def test_a_development_jwks_url_in_capitals_is_still_the_development_key_pair():
    settings = load_settings("records", env={"CLINIC_OIDC_JWKS_URL": "FILE:///srv/clinic/identity/jwks.json"})
    assert settings.accepts_development_tokens  # so that the warnings for development tokens are given
    assert isinstance(identity.keys_for(settings.oidc_jwks_url), identity.FileKeys)


@pytest.mark.parametrize("changes, setting", [
    ({"CLINIC_OIDC_ISSUER": None}, "CLINIC_OIDC_ISSUER"),
    ({"CLINIC_OIDC_ISSUER": DEVELOPMENT_ISSUER}, "CLINIC_OIDC_ISSUER"),
    ({"CLINIC_OIDC_ISSUER": DEVELOPMENT_ISSUER.upper() + "/"}, "CLINIC_OIDC_ISSUER"),
    ({"CLINIC_OIDC_JWKS_URL": None}, "CLINIC_OIDC_JWKS_URL"),
    ({"CLINIC_OIDC_JWKS_URL": "file:///etc/clinic/jwks.json"}, "CLINIC_OIDC_JWKS_URL"),
    ({"CLINIC_OIDC_JWKS_URL": "FILE:///etc/clinic/jwks.json"}, "CLINIC_OIDC_JWKS_URL"),
    ({"CLINIC_OIDC_JWKS_URL": "http://id.example.org/realms/clinic/protocol/openid-connect/certs"}, "CLINIC_OIDC_JWKS_URL"),
    ({"DATABASE_URL": None}, "DATABASE_URL"),
    ({"DATABASE_URL": "sqlite:////srv/records.db"}, "DATABASE_URL"),
    ({"DATABASE_URL": "SQLITE:////srv/records.db"}, "DATABASE_URL"),
    # libpq takes ?password= over the user part's: every password the URL gives is checked.
    ({"DATABASE_URL": "postgresql+psycopg://postgres:kT7-long-random@db/records?password=postgres"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://records@db/records?password=records"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://records@db/records?sslmode=verify-full"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://postgres:postgres@db/records"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://clinic:clinic@db/records"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://records:password@db/records"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://records@db/records"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql+psycopg://records:@db/records"}, "DATABASE_URL"),
    ({"RABBITMQ_URL": None}, "RABBITMQ_URL"),
    ({"RABBITMQ_URL": "amqp://guest:guest@mq.internal:5672/%2F"}, "RABBITMQ_URL"),
    ({"RABBITMQ_URL": "amqp://guest:Qw9-long-random@mq.internal:5672/%2F"}, "RABBITMQ_URL"),
    ({"RABBITMQ_URL": "amqp://clinic-records@mq.internal:5672/%2F"}, "RABBITMQ_URL"),
    ({"RABBITMQ_URL": "amqp://clinic:clinic@mq.internal:5672/%2F"}, "RABBITMQ_URL"),
])
def test_production_refuses_each_development_default_naming_the_setting(changes, setting):
    env = {name: value for name, value in {**PRODUCTION, **changes}.items() if value is not None}
    with pytest.raises(ConfigurationError, match=setting):
        load_settings("records", env=env).check_safe_to_run()
    for environment in ("development", "test"):  # where they are what make run and the tests need
        load_settings("records", env={**env, "CLINIC_ENV": environment}).check_safe_to_run()


def test_production_refuses_plain_smtp_to_another_machine():
    from notifications.config import load_mail_settings

    details = {"CLINIC_ADDRESS": "1 Main St", "CLINIC_PHONE": "+1 555 0100"}
    with pytest.raises(ConfigurationError, match="SMTP_SECURITY"):
        load_mail_settings({**PRODUCTION, **details, "SMTP_HOST": "smtp.example.org"})
    load_mail_settings({**PRODUCTION, **details, "SMTP_HOST": "smtp.example.org", "SMTP_SECURITY": "starttls"})
    load_mail_settings({**PRODUCTION, **details, "SMTP_HOST": "127.0.0.1"})
    load_mail_settings({"CLINIC_ENV": "development", "SMTP_HOST": "smtp.example.org"})


@pytest.mark.parametrize("name, value", [
    ("CLINIC_OIDC_JWKS_URL", "ftp://id.example.org/certs"), ("CLINIC_OIDC_JWKS_URL", "id.example.org/certs"),
    ("CLINIC_TOKEN_MAX_LIFETIME_MINUTES", "0"), ("CLINIC_TOKEN_MAX_LIFETIME_MINUTES", "5256000"),
    ("CLINIC_TOKEN_CLOCK_SKEW_SECONDS", "-1"), ("CLINIC_TOKEN_CLOCK_SKEW_SECONDS", "3600"),
])
def test_identity_settings_out_of_range_are_refused_at_start(name, value):
    with pytest.raises(ConfigurationError, match=name):
        load_settings("records", env={name: value})


def test_each_service_has_its_own_audience_unless_told():
    assert load_settings("sessions", env={}).oidc_audience == "clinic-sessions"
    assert load_settings("sessions", env={"CLINIC_OIDC_AUDIENCE": "sessions-api"}).oidc_audience == "sessions-api"


# --- where keys are, and where they are not -----------------------------------------------------


def test_no_worker_loads_the_identity_module():
    program = ("import sys, clinic.worker, records.worker, scheduling.worker, sessions.worker, notifications.worker; "
               "print('clinic.identity' in sys.modules)")
    answer = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "False"


@pytest.mark.parametrize("environment, bind, warned", [
    ("development", ("0.0.0.0", 8000), True), ("test", ("10.1.2.3", 8000), True),
    ("development", ("127.0.0.1", 8000), False), ("production", ("0.0.0.0", 8000), False),
])
def test_a_development_service_reachable_from_other_machines_warns_once_at_start(monkeypatch, environment, bind, warned):
    from clinic import gunicorn_conf

    monkeypatch.setenv("CLINIC_ENV", environment)
    for name, value in PRODUCTION.items():
        if name != "CLINIC_ENV":
            monkeypatch.setenv(name, value) if environment == "production" else monkeypatch.delenv(name, raising=False)
    warnings = []
    server = SimpleNamespace(cfg=SimpleNamespace(address=[bind]), log=SimpleNamespace(warning=lambda *a: warnings.append(a)))
    gunicorn_conf._warn_when_development_tokens_are_reachable(server, load_settings(gunicorn_conf._service(server)))
    assert len(warnings) == (1 if warned else 0)
    if warned:
        assert "accepts development tokens" in warnings[0][0]
        # Who can sign one: whoever can read the development private key, not whoever has the code.
        assert "private key" in warnings[0][0] and "clinic's code" not in warnings[0][0]


def test_the_keycloak_realm_defines_the_staff_roles_and_one_pkce_client_per_staff_app():
    realm = json.loads((ROOT / "deploy" / "keycloak" / "clinic-realm.json").read_text())
    assert realm["realm"] == "clinic"
    assert sorted(role["name"] for role in realm["roles"]["realm"]) == sorted(auth.STAFF_ROLES)
    assert 0 < realm["accessTokenLifespan"] <= load_settings("records", env={}).token_max_lifetime_minutes * 60
    clients = {client["clientId"]: client for client in realm["clients"]}
    assert set(clients) == {"front-desk-app", "nurse-app", "neurologist-app", "admin-app"}
    audiences = {f"clinic-{service}" for service in cli.SERVICES}
    for client in clients.values():
        assert client["publicClient"] and client["standardFlowEnabled"]
        assert not client["implicitFlowEnabled"] and not client["directAccessGrantsEnabled"]
        assert client["attributes"]["pkce.code.challenge.method"] == "S256"
        given = {mapper["config"]["included.custom.audience"] for mapper in client["protocolMappers"]
                 if mapper["protocolMapper"] == "oidc-audience-mapper"}
        assert given and given <= audiences
    assert {mapper["config"]["included.custom.audience"] for mapper in clients["admin-app"]["protocolMappers"]} == audiences


def test_gunicorn_refuses_production_on_development_settings_with_one_line_and_no_worker(tmp_path):
    # The master checks the settings before any worker forks: no traceback per worker ("Worker failed to boot").
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CLINIC_", "DATABASE_URL", "RABBITMQ_URL"))}
    env.update(CLINIC_ENV="production", CLINIC_VAR_DIR=str(tmp_path), CLINIC_METRICS_PORT="0")
    answer = subprocess.run([str(Path(sys.executable).parent / "gunicorn"), "-c", "python:clinic.gunicorn_conf", "--bind",
                             "127.0.0.1:0", "--workers", "2", "scheduling.app:create_app()"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    output = answer.stdout + answer.stderr
    assert answer.returncode == 1, output
    refusals = [line for line in output.splitlines() if "refusing to start" in line]
    assert len(refusals) == 1 and "CLINIC_OIDC_ISSUER" in refusals[0], output
    assert "Traceback" not in output and "Booting worker" not in output and len(output.splitlines()) <= 3, output


@pytest.mark.parametrize("uri, environment, service", [
    ("sessions.app:create_app()", {}, "sessions"), ("records.app:create_app()", {"SERVICE": "scheduling"}, "records"),
    (None, {"SERVICE": "notifications"}, "notifications"),
])
def test_gunicorn_checks_the_settings_of_the_service_it_serves(monkeypatch, uri, environment, service):
    from clinic import gunicorn_conf

    monkeypatch.delenv("SERVICE", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    server = SimpleNamespace(app=SimpleNamespace(app_uri=uri), cfg=SimpleNamespace(wsgi_app=None))
    assert gunicorn_conf._service(server) == service
