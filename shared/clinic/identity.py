"""Staff identity from an OpenID Connect provider: the provider's public keys, and the checks a token passes.

The services are resource servers. They never hold a key that can sign a staff token: they read the
issuer's public keys (a JWKS) from CLINIC_OIDC_JWKS_URL, over https from the provider in production, or
from a file in development. Only a web process that checks a token loads this module (clinic.auth
imports it when the first token arrives), so the workers hold no key at all.

In development `clinic token` signs with a development key pair kept beside the JWKS file: an ES256
(P-256) private key in development-signing-key.pem (mode 0600), its public half in the JWKS, named by
its RFC 7638 thumbprint. The pair is created on first use; deleting both files rotates it, and the
services read the new JWKS without a restart.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from clinic.config import Settings, url_scheme
from clinic.errors import ClinicError, Unauthorized
from clinic.files import write_atomically

log = logging.getLogger(__name__)

# Asymmetric only: a shared secret (HS*) would let whoever verifies also sign, and `none` signs nothing.
ALGORITHMS = ("RS256", "ES256")
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "sub")
# Times in seconds since 1970: a JSON number each, never a string PyJWT would read as one.
TIME_CLAIMS = ("exp", "iat", "nbf")
DEVELOPMENT_KEY_FILE = "development-signing-key.pem"
DEVELOPMENT_ALGORITHM = "ES256"
# How long fetched keys are used before they are fetched again (a removed key stops working then), and
# the least time between two fetches that an unknown `kid` may cause (made-up kids cannot hammer the provider).
KEYS_LIFESPAN_SECONDS = 300.0
UNKNOWN_KID_COOLDOWN_SECONDS = 10.0
FETCH_TIMEOUT_SECONDS = 5.0
# What a failed fetch may raise through PyJWT 2.15: its own error for an unreachable provider or a bad
# status, and, once the answer has begun, a reset or TLS error (OSError), a cut body (IncompleteRead)
# or a body that is not JSON (ValueError). Each one keeps the keys held.
FETCH_FAILURES = (jwt.PyJWKClientError, OSError, http.client.HTTPException, ValueError)


class IdentityProviderUnreachable(ClinicError):
    """No keys could ever be fetched from the provider: a token cannot be checked either way."""

    http_status = 503
    code = "identity_provider_unreachable"


# --- the development key pair ------------------------------------------------------------------


def development_jwks_path(settings: Settings) -> Path:
    """The JWKS file of the development key pair; ValueError when the settings do not use one."""
    if settings.is_production:
        raise ValueError("production verifies tokens from the identity provider; it has no development key pair")
    path = jwks_file(settings.oidc_jwks_url)
    if path is None:
        raise ValueError(f"CLINIC_OIDC_JWKS_URL is not a development JWKS file (file://...): {settings.oidc_jwks_url}")
    return path


def jwks_file(url: str) -> Path | None:
    """The path of a file:// JWKS URL, None for any other."""
    if url_scheme(url) != "file":
        return None
    return Path(url2pathname(unquote(urlsplit(url).path)))


def development_key_pair(jwks_path) -> ec.EllipticCurvePrivateKey:
    """The development private key beside `jwks_path`, with its public half in that JWKS.

    Created on first use. Two processes starting at once end with one pair: each writes a complete key
    to a temporary file and links it into place, and the one that finds the name taken reads the other's."""
    jwks_path = Path(jwks_path)
    key_path = jwks_path.parent / DEVELOPMENT_KEY_FILE
    jwks_path.parent.mkdir(parents=True, exist_ok=True)
    if not key_path.exists():
        fresh = ec.generate_private_key(ec.SECP256R1())
        pem = fresh.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
        descriptor, temporary = tempfile.mkstemp(dir=jwks_path.parent, prefix=".key-")  # mode 0600
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(pem)
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temporary, key_path)
            except FileExistsError:
                pass  # another process made the pair first: theirs is the pair
        finally:
            os.unlink(temporary)
    private_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    published = json.dumps(public_jwks(private_key.public_key()), indent=2) + "\n"
    try:
        current = jwks_path.read_text()
    except FileNotFoundError:
        current = None
    if current != published:
        write_atomically(jwks_path, published, 0o644)  # the public half: readable by the services
    return private_key


def public_jwks(public_key: ec.EllipticCurvePublicKey) -> dict:
    """A JWKS holding `public_key`, its `kid` the RFC 7638 thumbprint."""
    jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    return {"keys": [{**jwk, "kid": thumbprint(jwk), "use": "sig", "alg": DEVELOPMENT_ALGORITHM}]}


def thumbprint(jwk: dict) -> str:
    """RFC 7638: SHA-256 of the required members, sorted, without spaces; base64url without padding."""
    required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}[jwk["kty"]]
    canonical = json.dumps({name: jwk[name] for name in required}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def sign_development_token(settings: Settings, claims: dict, headers: dict | None = None) -> str:
    """`claims` as they are, signed with the development private key (ES256, `kid` of its JWKS entry).

    For `clinic token` (through clinic.auth.issue_token) and for tests that need a token the services
    must refuse (expired, another audience or issuer, too long a lifetime); a header given as None is left
    out (a token without `kid`). ValueError unless the settings read a development JWKS."""
    private_key = development_key_pair(development_jwks_path(settings))
    kid = public_jwks(private_key.public_key())["keys"][0]["kid"]
    headers = {name: value for name, value in {"kid": kid, **(headers or {})}.items() if value is not None}
    return jwt.encode(claims, private_key, algorithm=DEVELOPMENT_ALGORITHM, headers=headers)


# --- the provider's public keys ----------------------------------------------------------------


def _signing_keys(document) -> dict[str, jwt.PyJWK]:
    """{kid: key} of the JWKS document's signing keys that use an allowed algorithm; others are left out."""
    keys = {}
    for entry in (document.get("keys") if isinstance(document, dict) else None) or []:
        if not isinstance(entry, dict) or not entry.get("kid") or entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue  # a key of a kind this service does not use (an encryption key, an HMAC secret)
        if key.algorithm_name in ALGORITHMS:
            keys[str(entry["kid"])] = key
    return keys


class FileKeys:
    """A JWKS file, read again whenever it changes (a rotated development pair works without a restart).

    Every token checked, even one already verified (clinic.auth's cache), asks for its key: the file is
    looked at (os.stat) at most once every CHECK_EVERY_SECONDS for a key it holds, and at once for a
    `kid` it does not (a new pair). A removed key is so refused at most that long after its removal."""

    CHECK_EVERY_SECONDS = 1.0

    def __init__(self, path: Path):
        self.path = path
        self._seen = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._checked_at = -math.inf  # time.monotonic() of the last look at the file
        self._lock = threading.Lock()

    def key_for(self, kid: str) -> jwt.PyJWK | None:
        key = self._keys.get(kid)
        if key is not None and time.monotonic() - self._checked_at < self.CHECK_EVERY_SECONDS:
            return key
        with self._lock:
            self._checked_at = time.monotonic()
            try:
                status = os.stat(self.path)
                seen = (status.st_ino, status.st_mtime_ns, status.st_size)
            except OSError:
                seen = None
            if seen != self._seen:
                self._keys = self._read() if seen is not None else {}
                self._seen = seen
            return self._keys.get(kid)

    def _read(self) -> dict[str, jwt.PyJWK]:
        try:
            return _signing_keys(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            log.warning("the JWKS file %s cannot be read as JSON; no token is accepted until it can", self.path)
            return {}


class RemoteKeys:
    """The provider's JWKS over http(s), through PyJWKClient: fetched once, used for `lifespan` seconds,
    fetched again sooner for a `kid` it does not know (a rotated key), but at most once every `cooldown`
    seconds for those. After a failed fetch none is tried for `cooldown` seconds, and the keys fetched last
    are kept through an outage.

    One fetch at a time, outside the lock: the request that starts it waits for it, the others go on
    with the keys held (a slow provider delays one request, not all). Only while no keys were ever
    fetched do the others wait for that fetch, and no longer than its timeout."""

    def __init__(self, url: str, lifespan: float | None = None, cooldown: float | None = None,
                 timeout: float = FETCH_TIMEOUT_SECONDS):
        self.url = url
        self.lifespan = KEYS_LIFESPAN_SECONDS if lifespan is None else lifespan
        self.cooldown = UNKNOWN_KID_COOLDOWN_SECONDS if cooldown is None else cooldown
        self.timeout = timeout
        # Its own caches are off: this class decides when to fetch, and keeps the last keys through an outage.
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=timeout)
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._fetched_at = 0.0
        self._failed_at = float("-inf")
        self._unknown_kid_fetched_at = float("-inf")
        self._fetching: threading.Event | None = None  # set when the fetch under way ends
        self._lock = threading.Lock()

    def key_for(self, kid: str) -> jwt.PyJWK | None:
        with self._lock:
            now = time.monotonic()
            held, cooling = self._keys, now - self._failed_at < self.cooldown
            if held is None and cooling and self._fetching is None:
                # It failed a moment ago: answer at once rather than make every request wait on it again.
                raise IdentityProviderUnreachable("the identity provider's keys could not be fetched; try again shortly")
            # A kid the keys held do not name may be a rotated key: fetch again, at most once a cooldown.
            unknown = held is not None and kid not in held and now - self._unknown_kid_fetched_at >= self.cooldown
            due = held is None or now - self._fetched_at >= self.lifespan
            fetching_here = not cooling and (due or unknown) and self._fetching is None
            if fetching_here:
                self._fetching = threading.Event()
                if unknown:
                    self._unknown_kid_fetched_at = now
            under_way = self._fetching
        if fetching_here:
            self._fetch(under_way)
        elif held is None and under_way is not None:
            under_way.wait(self.timeout)  # no keys to go on with: wait for the first fetch, within its timeout
        keys = self._keys
        if keys is None:
            raise IdentityProviderUnreachable("the identity provider's keys could not be fetched; try again shortly")
        return keys.get(kid)

    def _fetch(self, done: threading.Event) -> None:
        try:
            document = self._client.fetch_data()
        except FETCH_FAILURES as exc:
            with self._lock:
                self._failed_at = time.monotonic()
            if self._keys is not None:
                log.warning("the identity provider's keys could not be fetched again (%s); using the keys fetched before",
                            type(exc).__name__)
            else:
                log.warning("the identity provider's keys could not be fetched (%s)", type(exc).__name__)
        else:
            keys = _signing_keys(document)
            with self._lock:
                self._keys, self._fetched_at = keys, time.monotonic()
        finally:
            with self._lock:
                self._fetching = None
            done.set()


# --- checking a token --------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedToken:
    claims: dict
    key: jwt.PyJWK  # the key it was verified with: a cached verification holds only while it is still published


class TokenVerifier:
    """The checks every staff token passes, against one issuer, one audience and one set of keys."""

    def __init__(self, settings: Settings, keys):
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.leeway = settings.token_clock_skew_seconds
        self.max_lifetime_seconds = settings.token_max_lifetime_minutes * 60
        self.keys = keys

    def verify(self, token: str) -> VerifiedToken:
        """The token's claims once its signature, issuer, audience, times and subject are checked;
        Unauthorized saying what is wrong otherwise (IdentityProviderUnreachable when no keys can be had)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the token is not a well-formed JWT") from None
        if header.get("alg") not in ALGORITHMS:
            raise Unauthorized(f"the token must be signed with {' or '.join(ALGORITHMS)}")
        kid = header.get("kid")
        key = self.keys.key_for(kid) if isinstance(kid, str) and kid else None
        if key is None:
            raise Unauthorized("the token is signed with a key the identity provider does not publish")
        try:
            claims = jwt.decode(token, key, algorithms=list(ALGORITHMS), issuer=self.issuer, audience=self.audience,
                                leeway=self.leeway, options={"require": list(REQUIRED_CLAIMS)})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"the token has no {exc.claim} claim") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("the token was issued by another issuer") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("the token is not meant for this service (audience)") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("the token is not valid yet (issued or usable only in the future)") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("the token's signature does not match") from None
        except jwt.PyJWTError:
            raise Unauthorized("the token is not valid") from None
        for name in TIME_CLAIMS:
            # PyJWT reads "exp": "1700000000" as the number; the standard (RFC 7519, NumericDate) and
            # every provider write a JSON number. A string or true there is a token nobody should have made.
            if name in claims and not _is_numeric_date(claims[name]):
                raise Unauthorized(f"the token's {name} claim is not a number of seconds")
        if not isinstance(claims["sub"], str) or not claims["sub"].strip():
            raise Unauthorized("the token's subject is empty")
        if int(claims["exp"]) < int(claims["iat"]):  # both checked as integers by PyJWT
            raise Unauthorized("the token expires before it was issued")
        if int(claims["exp"]) - int(claims["iat"]) > self.max_lifetime_seconds:
            raise Unauthorized(f"the token lives longer than the {self.max_lifetime_seconds // 60} minutes allowed")
        return VerifiedToken(claims, key)

    def still_published(self, verified: VerifiedToken) -> bool:
        """Whether the key a token was verified with is still the one its `kid` names."""
        return self.keys.key_for(verified.key.key_id) is verified.key


def _is_numeric_date(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def keys_for(url: str):
    """The key source a JWKS URL names: a file read from disk, or a provider fetched over http(s)."""
    path = jwks_file(url)
    return FileKeys(path) if path is not None else RemoteKeys(url)
