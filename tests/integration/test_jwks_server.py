"""The services fetch an identity provider's keys over HTTP, as they do from Keycloak in production: a small
JWKS server in a thread, with two RSA keys over time, counting the requests it answers.

Keys are fetched once and used for many tokens; a token with a new `kid` after a rotation is accepted after
one fetch; a key the provider stopped publishing is refused once the keys are fetched again; made-up kids
do not cause a fetch each; an unreachable provider is a 503 while no keys were ever fetched, and the keys
fetched last are kept through an outage, a connection reset in the middle of the keys included; while a
fetch hangs, the other requests go on with the keys held.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from clinic import auth, identity
from clinic.config import load_settings
from clinic.errors import Unauthorized
from clinic.localservers import free_port
from clinic.testing import eventually
from tests.support.tokens import claims_for

LIFESPAN, COOLDOWN = 1.0, 30.0


class Provider:
    """A JWKS endpoint whose keys the test changes, counting the fetches."""

    def __init__(self):
        self.keys = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in ("key-1", "key-2")}
        self.published = ["key-1"]
        self.fetches = 0
        self.resetting = False  # answer the headers and part of the keys, then reset the connection
        self.hanging = False  # answer only once `released` is set
        self.released = threading.Event()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                provider.fetches += 1
                if provider.resetting:
                    self.send_response(200)
                    self.send_header("Content-Length", "5000")
                    self.end_headers()
                    self.wfile.write(b'{"keys": [')
                    # Closed with a zero linger: the client reads a reset (ECONNRESET), not the end of the body.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    return
                if provider.hanging:
                    provider.released.wait(30)
                body = json.dumps(provider.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the client stopped waiting for a hanging answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/realms/clinic/protocol/openid-connect/certs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def jwks(self) -> dict:
        entries = []
        for kid in self.published:
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True)
            entries.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        # An encryption key beside them, as Keycloak publishes one: never used to verify.
        entries.append({"kty": "RSA", "kid": "encryption", "use": "enc", "alg": "RSA-OAEP", "n": entries[0]["n"], "e": "AQAB"})
        return {"keys": entries}

    def token(self, settings, kid: str, subject: str = "desk-1") -> str:
        claims = claims_for(settings, sub=subject, exp=int(time.time()) + 300, realm_access={"roles": ["front_desk"]})
        return jwt.encode(claims, self.keys.get(kid) or self.keys["key-1"], algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def provider(monkeypatch):
    # Keys kept a second (five minutes in service) so that the test sees them fetched again.
    monkeypatch.setattr(identity, "KEYS_LIFESPAN_SECONDS", LIFESPAN)
    monkeypatch.setattr(identity, "UNKNOWN_KID_COOLDOWN_SECONDS", COOLDOWN)
    provider = Provider()
    provider.thread.start()
    try:
        yield provider
    finally:
        provider.released.set()
        provider.server.shutdown()
        provider.server.server_close()


def settings_for(provider):
    # A path of the test's own in the issuer: the process's verifiers are kept per issuer and JWKS URL.
    return load_settings("records", env={"CLINIC_OIDC_JWKS_URL": provider.url,
                                         "CLINIC_OIDC_ISSUER": f"http://127.0.0.1/realms/{uuid.uuid4()}"})


def test_keys_are_fetched_once_for_many_tokens(provider):
    settings = settings_for(provider)
    for number in range(40):
        principal = auth.verify_token(settings, provider.token(settings, "key-1", subject=f"desk-{number}"))
        assert principal == auth.Principal(f"desk-{number}", ("front_desk",))
    assert provider.fetches == 1


def test_a_new_kid_after_rotation_is_accepted_after_one_fetch(provider):
    settings = settings_for(provider)
    auth.verify_token(settings, provider.token(settings, "key-1"))
    provider.published = ["key-1", "key-2"]
    assert auth.verify_token(settings, provider.token(settings, "key-2", subject="desk-2")).subject == "desk-2"
    assert provider.fetches == 2
    for number in range(10):
        auth.verify_token(settings, provider.token(settings, "key-2", subject=f"desk-{number}"))
    assert provider.fetches == 2


def test_made_up_kids_do_not_cause_a_fetch_each(provider):
    settings = settings_for(provider)
    auth.verify_token(settings, provider.token(settings, "key-1"))
    for number in range(25):
        with pytest.raises(Unauthorized, match="does not publish"):
            auth.verify_token(settings, provider.token(settings, f"made-up-{number}"))
    assert provider.fetches == 2  # the first made-up kid fetched once; the others wait out the cooldown


def test_a_key_the_provider_removed_is_refused_once_the_keys_are_fetched_again(provider):
    settings = settings_for(provider)
    provider.published = ["key-1", "key-2"]
    old, new = provider.token(settings, "key-1"), provider.token(settings, "key-2")
    assert auth.verify_token(settings, old).subject == auth.verify_token(settings, new).subject == "desk-1"
    provider.published = ["key-2"]

    def old_refused() -> bool:
        try:
            auth.verify_token(settings, old)
        except Unauthorized as refused:
            return "does not publish" in refused.message
        return False

    eventually(old_refused, timeout=LIFESPAN * 10, interval=0.05, message="the removed key's token to be refused")
    assert auth.verify_token(settings, new).subject == "desk-1"


def test_keys_fetched_before_are_kept_while_the_provider_is_down(provider):
    settings = settings_for(provider)
    token = provider.token(settings, "key-1")
    auth.verify_token(settings, token)
    provider.server.shutdown()
    provider.server.server_close()
    fetches = provider.fetches
    started = time.monotonic()
    eventually(lambda: time.monotonic() - started > LIFESPAN, timeout=5, interval=0.05, message="the keys' lifespan to pass")
    assert auth.verify_token(settings, provider.token(settings, "key-1", subject="desk-9")).subject == "desk-9"
    assert provider.fetches == fetches


def test_an_unreachable_provider_is_a_503_in_the_shared_shape(tmp_path):
    from clinic.testing import assert_error
    from clinic.testing.service_apps import sqlite_service_app

    url = f"http://127.0.0.1:{free_port()}/realms/clinic/protocol/openid-connect/certs"
    app = sqlite_service_app("records", tmp_path, oidc_jwks_url=url, oidc_issuer=f"http://127.0.0.1/realms/{uuid.uuid4()}")
    token = jwt.encode({"sub": "desk-1"}, rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256",
                       headers={"kid": "key-1"})
    error = assert_error(app.test_client().get("/patients/00000000-0000-0000-0000-000000000000",
                                               headers={"Authorization": f"Bearer {token}"}), 503, "identity_provider_unreachable")
    assert "could not be fetched" in error["message"]


def lifespan_passes() -> None:
    started = time.monotonic()
    eventually(lambda: time.monotonic() - started > LIFESPAN, timeout=5, interval=0.05, message="the keys' lifespan to pass")


def test_a_connection_reset_in_the_middle_of_the_keys_keeps_the_keys_held(provider):
    settings = settings_for(provider)
    auth.verify_token(settings, provider.token(settings, "key-1"))
    provider.resetting = True
    lifespan_passes()
    for number in range(5):
        assert auth.verify_token(settings, provider.token(settings, "key-1", subject=f"desk-{number}")).subject == f"desk-{number}"
    # A made-up kid after the failure does not fetch again either: the failure's cooldown holds for it too.
    with pytest.raises(Unauthorized, match="does not publish"):
        auth.verify_token(settings, provider.token(settings, "made-up"))
    assert provider.fetches == 2  # the first fetch, then one failed fetch for the whole cooldown


def test_a_connection_reset_before_any_keys_is_a_503_fetched_once_a_cooldown(provider, tmp_path):
    from clinic.testing import assert_error
    from clinic.testing.service_apps import sqlite_service_app

    provider.resetting = True
    app = sqlite_service_app("records", tmp_path, oidc_jwks_url=provider.url, oidc_issuer=f"http://127.0.0.1/realms/{uuid.uuid4()}")
    settings = app.config["CLINIC_SETTINGS"]
    client = app.test_client()
    for number in range(3):
        token = provider.token(settings, "key-1", subject=f"desk-{number}")
        assert_error(client.get("/patients/00000000-0000-0000-0000-000000000000", headers={"Authorization": f"Bearer {token}"}),
                     503, "identity_provider_unreachable")
    assert provider.fetches == 1


def test_while_a_fetch_hangs_the_other_lookups_use_the_keys_held(provider):
    keys = identity.RemoteKeys(provider.url, lifespan=LIFESPAN, cooldown=COOLDOWN, timeout=20)
    first = keys.key_for("key-1")
    provider.hanging = True
    lifespan_passes()
    found, finished = [], []

    def look_up():
        found.append(keys.key_for("key-1"))
        finished.append(time.monotonic())

    threads = [threading.Thread(target=look_up, daemon=True) for _ in range(5)]
    for thread in threads:
        thread.start()
    # One lookup fetches (and waits on the hanging provider); the four others answer from the keys held.
    # Both are waited for: on a loaded machine the four may answer before the fetch's request reaches the provider.
    eventually(lambda: len(found) == 4 and provider.fetches == 2, timeout=15, interval=0.02,
               message="four lookups to answer while the fetch hangs")
    assert all(key is first for key in found)
    provider.released.set()
    for thread in threads:
        thread.join(timeout=10)
    assert len(found) == 5 and provider.fetches == 2


def test_lookups_with_no_keys_wait_for_the_one_fetch_under_way(provider):
    keys = identity.RemoteKeys(provider.url, lifespan=LIFESPAN, cooldown=COOLDOWN, timeout=20)
    provider.hanging = True
    found = []
    threads = [threading.Thread(target=lambda: found.append(keys.key_for("key-1")), daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    eventually(lambda: provider.fetches >= 1, timeout=5, interval=0.02, message="the fetch to start")
    provider.released.set()
    for thread in threads:
        thread.join(timeout=10)
    assert len(found) == 4 and all(key is not None and key.key_id == "key-1" for key in found)
    assert provider.fetches == 1


def test_lookups_with_no_keys_wait_no_longer_than_the_fetch_timeout(provider):
    keys = identity.RemoteKeys(provider.url, lifespan=LIFESPAN, cooldown=COOLDOWN, timeout=0.5)
    provider.hanging = True
    failures = []

    def look_up():
        try:
            keys.key_for("key-1")
        except identity.IdentityProviderUnreachable:
            failures.append(time.monotonic())

    started = time.monotonic()
    threads = [threading.Thread(target=look_up, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(failures) == 4 and max(failures) - started < 2.5  # each a 503 within about the 0.5 s timeout
    assert provider.fetches == 1
