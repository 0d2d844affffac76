"""Who is calling: staff bearer tokens (JWT) with roles, and per-device tokens for bedside monitors.

Staff tokens come from an OpenID Connect provider and are checked against its public keys
(clinic.identity; settings CLINIC_OIDC_*): RS256 or ES256 only, this service's audience, the
configured issuer, a lifetime no longer than CLINIC_TOKEN_MAX_LIFETIME_MINUTES, roles from
CLINIC_OIDC_ROLES_CLAIM. In development `clinic token` signs them with a local development key pair.
Device tokens are random secrets shown once when a device is registered; only their SHA-256 is
stored, which is enough for a 256-bit random secret (no salt or stretching needed for a value
nobody can guess).

Who calls each request is decided once, by the shared edge (clinic.http_edge), which keeps its answer
in flask.g.admitted; the views' guards (requires_roles here, clinic.audit.audited) compare roles only.

clinic.identity is imported only when a token is checked or issued, and Flask only by the guards: the
workers, which import this module for the role names and device tokens, load neither.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from clinic.config import Settings
from clinic.errors import Forbidden, Unauthorized

FRONT_DESK, NURSE, NEUROLOGIST, ADMIN = "front_desk", "nurse", "neurologist", "admin"
STAFF_ROLES = (FRONT_DESK, NURSE, NEUROLOGIST, ADMIN)
# A bedside monitor, with a device token of its own (DEVICE_TOKEN_PREFIX) instead of a staff token.
DEVICE = "device"
DEVICE_TOKEN_PREFIX = "dev_"


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: tuple[str, ...]

    def has_any(self, roles) -> bool:
        """Whether it has one of `roles` (the access table's frozenset, or any collection of role names)."""
        return any(role in roles for role in self.roles)


def issue_token(settings: Settings, subject: str, roles, ttl_minutes: int | None = None, audience=None) -> str:
    """A staff token signed with the development key pair (DEVELOPMENT ONLY: ValueError unless the settings
    read a development JWKS file, outside production). For `audience` (default: the settings' service),
    living `ttl_minutes` (default and most: CLINIC_TOKEN_MAX_LIFETIME_MINUTES)."""
    from clinic import identity

    roles = known_roles(roles)
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError("a token needs a subject: who it is for")
    ttl = settings.token_max_lifetime_minutes if ttl_minutes is None else ttl_minutes
    if not 1 <= ttl <= settings.token_max_lifetime_minutes:
        raise ValueError(f"a token lives from 1 to {settings.token_max_lifetime_minutes} minutes "
                         f"(CLINIC_TOKEN_MAX_LIFETIME_MINUTES), not {ttl}")
    now = int(time.time())
    claims = {"iss": settings.oidc_issuer, "aud": audience or settings.oidc_audience, "sub": subject,
              "iat": now, "exp": now + ttl * 60, **roles_claim(settings.oidc_roles_claim, roles)}
    return identity.sign_development_token(settings, claims)


def _claim_names(path: str) -> list[str]:
    """The nested claim names a roles claim path stands for: each dotted part (realm_access.roles), or,
    for a URL (Auth0's namespaced https://clinic.example.org/roles, whose dots are the host's), the one
    claim of that whole name. Never both: a top-level claim that happens to be called "realm_access.roles"
    must not stand in for the provider's nested realm_access.roles."""
    return [path] if "://" in path else path.split(".")


def roles_claim(path: str, roles) -> dict:
    """`roles` placed at the claim path: realm_access.roles -> {"realm_access": {"roles": [...]}}."""
    claim: object = list(roles)
    for name in reversed(_claim_names(path)):
        claim = {name: claim}
    return claim


def roles_from(claims: dict, path: str) -> tuple[str, ...]:
    """The staff roles at the claim path (_claim_names). Anything but a list there means no roles."""
    found: object = claims
    for name in _claim_names(path):
        found = found.get(name) if isinstance(found, dict) else None
    if not isinstance(found, list):
        return ()
    return tuple(role for role in STAFF_ROLES if role in found)


# Tokens already verified: a desk sends the same token with every request, and checking its signature
# again costs more than the rest of a small request's work. An entry is used only before the token
# expires and while the key it was verified with is still published; its key names the issuer, audience,
# keys and limits it was checked against, so a change of any cannot reuse it. Bounded: emptied when full.
_VERIFIED_MAX = 1024
_verified: dict[tuple, tuple[Principal, float, object]] = {}
# One verifier per (issuer, audience, keys, limits), and one key source per JWKS URL, made on first use.
_verifiers: dict[tuple, object] = {}
_key_sources: dict[str, object] = {}
_made = threading.Lock()


def verify_token(settings: Settings, token: str) -> Principal:
    """The staff member the token names, with the staff roles it carries; Unauthorized saying why not."""
    verifier, checks = _verifier(settings)
    cache_key = (checks, settings.oidc_roles_claim, token)
    known = _verified.get(cache_key)
    if known is not None and time.time() < known[1] and verifier.still_published(known[2]):
        return known[0]
    verified = verifier.verify(token)
    principal = Principal(subject=verified.claims["sub"], roles=roles_from(verified.claims, settings.oidc_roles_claim))
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    _verified[cache_key] = (principal, int(verified.claims["exp"]), verified)  # exp as PyJWT compares it
    return principal


def _verifier(settings: Settings):
    checks = (settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url,
              settings.token_max_lifetime_minutes, settings.token_clock_skew_seconds)
    verifier = _verifiers.get(checks)
    if verifier is None:
        from clinic import identity

        with _made:
            keys = _key_sources.get(settings.oidc_jwks_url)
            if keys is None:
                keys = _key_sources[settings.oidc_jwks_url] = identity.keys_for(settings.oidc_jwks_url)
            verifier = _verifiers.setdefault(checks, identity.TokenVerifier(settings, keys))
    return verifier, checks


def bearer_token(authorization_header: str | None) -> str:
    if not authorization_header:
        raise Unauthorized("a bearer token is required")
    scheme, _, token = authorization_header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def known_roles(roles) -> tuple[str, ...]:
    """The roles, as a tuple; ValueError naming any that is not a staff role (a misspelt one)."""
    unknown = set(roles) - set(STAFF_ROLES)
    if unknown:
        raise ValueError(f"unknown role(s): {', '.join(sorted(unknown))}")
    return tuple(roles)


def refuse_unless(principal: Principal, roles) -> None:
    """Raise Forbidden naming the roles when the principal has none of them."""
    if not principal.has_any(roles):
        # In the roles' usual order: `roles` may be a set (the access table's).
        named = [role for role in (*STAFF_ROLES, DEVICE) if role in roles]
        raise Forbidden(f"this needs one of the roles: {', '.join(named)}", {"required_roles": named})


def admitted_caller(g) -> Principal | None:
    """The caller the edge admitted for this request (flask.g passed as `g`): the staff member, or
    None for a bedside monitor's device token. The edge decides it for every operation of the role
    matrix, so a guarded view without it is a programming error (an app built without the edge)."""
    if "admitted" not in g:
        raise RuntimeError("no caller was admitted for this guarded view: is clinic.http_edge installed?")
    return g.admitted


def requires_roles():
    """Decorate a view: the caller must be one the role matrix (clinic.role_matrix) names for its
    operation: a valid staff token carrying one of the roles there or, where the matrix names `device`,
    a bedside monitor's token. The shared edge (clinic.http_edge) has already refused a caller without a
    valid token, before looking at the body, and kept who called; the roles are compared here (403).

    Place it above @blp.arguments so identity is checked before the body is read.
    The principal is available to the view as clinic.web.current_principal().
    """
    from flask import g

    from clinic.access import allowed_here

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            principal = admitted_caller(g)
            if principal is not None:
                refuse_unless(principal, allowed_here())
            return view(*args, **kwargs)

        wrapper._clinic_guarded = True
        return wrapper

    return decorate


def new_device_token() -> str:
    return DEVICE_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_device_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def device_token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_device_token(token), stored_hash)
