"""Who is calling: staff bearer tokens (JWT) with roles, and per-device tokens for bedside monitors.

Staff tokens are signed with CLINIC_JWT_SIGNING_KEY (HS256). Device tokens are
random secrets shown once when a device is registered; only their SHA-256 is
stored, which is enough for a 256-bit random secret (no salt or stretching needed
for a value nobody can guess).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import jwt

from clinic.config import Settings
from clinic.errors import Forbidden, Unauthorized

FRONT_DESK, NURSE, NEUROLOGIST, ADMIN = "front_desk", "nurse", "neurologist", "admin"
STAFF_ROLES = (FRONT_DESK, NURSE, NEUROLOGIST, ADMIN)
DEVICE_TOKEN_PREFIX = "dev_"


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: tuple[str, ...]

    def has_any(self, roles) -> bool:
        return bool(set(self.roles) & set(roles))


def issue_token(settings: Settings, subject: str, roles, ttl_minutes: int | None = None) -> str:
    roles = known_roles(roles)
    now = datetime.now(timezone.utc)
    claims = {
        "sub": subject,
        "roles": list(roles),
        "iss": settings.jwt_issuer,
        "iat": now,
        "exp": now + timedelta(minutes=ttl_minutes or settings.token_ttl_minutes),
    }
    return jwt.encode(claims, settings.jwt_signing_key, algorithm="HS256")


# Tokens already verified, with their expiry: a desk sends the same token with every request, and
# checking its signature again costs more than the rest of a small request's work. A token valid
# once stays valid until it expires (nothing in it can become invalid sooner), so an entry is used
# only before that moment. Bounded: emptied when full.
_VERIFIED_MAX = 1024
_verified: dict[tuple[str, str, str], tuple[Principal, float]] = {}


def verify_token(settings: Settings, token: str) -> Principal:
    key = (settings.jwt_signing_key, settings.jwt_issuer, token)
    known = _verified.get(key)
    if known is not None and time.time() < known[1]:
        return known[0]
    principal, expires = _verify_signature(settings, token)
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    _verified[key] = (principal, expires)
    return principal


def _verify_signature(settings: Settings, token: str) -> tuple[Principal, float]:
    try:
        claims = jwt.decode(
            token,
            settings.jwt_signing_key,
            algorithms=["HS256"],
            issuer=settings.jwt_issuer,
            options={"require": ["sub", "exp", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("the token is not valid") from None
    roles = claims.get("roles")
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise Unauthorized("the token carries no roles")
    principal = Principal(subject=str(claims["sub"]), roles=tuple(role for role in roles if role in STAFF_ROLES))
    return principal, int(claims["exp"])  # as PyJWT compares it


def bearer_token(authorization_header: str | None) -> str:
    if not authorization_header:
        raise Unauthorized("a bearer token is required")
    scheme, _, token = authorization_header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def known_roles(roles) -> tuple[str, ...]:
    """The roles, refused at import time when one is misspelt."""
    unknown = set(roles) - set(STAFF_ROLES)
    if unknown:
        raise ValueError(f"unknown role(s): {', '.join(sorted(unknown))}")
    return tuple(roles)


def authenticate() -> Principal:
    """The caller of the current request, from its bearer token; raises Unauthorized. Also kept in flask.g."""
    from flask import g, request

    from clinic.web import settings as current_settings

    principal = verify_token(current_settings(), bearer_token(request.headers.get("Authorization")))
    g.principal = principal
    return principal


def refuse_unless(principal: Principal, roles) -> None:
    """Raise Forbidden naming the roles when the principal has none of them."""
    if not principal.has_any(roles):
        raise Forbidden(f"this needs one of the roles: {', '.join(roles)}", {"required_roles": list(roles)})


def requires_roles(*roles: str):
    """Decorate a view: the caller must present a valid staff token carrying one of these roles.

    Place it above @blp.arguments so identity is checked before the body is read.
    The principal is available to the view as clinic.web.current_principal().
    """
    known_roles(roles)

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            refuse_unless(authenticate(), roles)
            return view(*args, **kwargs)

        wrapper._clinic_roles = roles
        return wrapper

    return decorate


def new_device_token() -> str:
    return DEVICE_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_device_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def device_token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_device_token(token), stored_hash)
