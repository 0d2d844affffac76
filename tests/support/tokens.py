"""Staff tokens made by hand, as an attacker or an identity provider of the test's own would make them,
for the tests that check which tokens a service takes and which it refuses."""

from __future__ import annotations

import base64
import json
import time


def claims_for(settings, **changes) -> dict:
    """A staff token's claims for the service of these settings, valid for ten minutes: nurse-7, a nurse.
    A change to None leaves that claim out."""
    now = int(time.time())
    claims = {"iss": settings.oidc_issuer, "aud": settings.oidc_audience, "sub": "nurse-7", "iat": now,
              "exp": now + 600, "realm_access": {"roles": ["nurse"]}}
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def hand_made(header: dict, claims: dict, sign) -> str:
    """A JWT put together by hand, as an attacker would, signed by `sign(signing_input)` (an alg the
    JWT libraries refuse to write, such as none or HS256 keyed with a public key, included)."""
    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(claims).encode())
    return (signing_input + b"." + b64(sign(signing_input))).decode()
