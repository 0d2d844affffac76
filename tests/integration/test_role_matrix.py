"""The role matrix (clinic.role_matrix) holds: every operation of every service, tried by every kind of
caller, answers only the callers the matrix names; every other caller gets a 401 or 403 in the shared
error shape and changes nothing.

The operations are found by walking each app's own /openapi.json, so an operation added later is
walked without a new test, and one without an entry in the matrix fails here (and stops its app from
starting). The callers: no token; tokens the services must refuse (expired, signed by a key not in the
JWKS, another issuer, another service's audience, `alg: none`, HS256 "signed" with the public key);
a valid staff token without a role; each staff role alone; a bedside monitor's device token.

Refused attempts go to ids that exist (a patient, a room, a device) with bodies that pass the edge,
so a missing check would read or change something real; the database must be the same afterwards,
apart from the audit's own entries of the refusals. Each refused attempt is also sent with what the
edge would refuse from an allowed caller (no body, an empty object, text that is not JSON, JSON sent
as text/plain or compressed, a body over the limit, a query integer past 64 bits, a target past the
limit): who is asking is settled first, so the answer is still the 401 or 403. Allowed attempts go to made-up ids: reaching the
view (a 404, a 409, a 422 after the check) is what is asserted, not the use case.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from datetime import datetime, timezone

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask.views import MethodView
from flask_smorest import Blueprint

from clinic import access, identity
from clinic.auth import STAFF_ROLES, issue_token, roles_claim
from clinic.config import ConfigurationError, load_settings
from clinic.role_matrix import MATRIX
from clinic.testing.service_apps import SERVICES, sqlite_service_app
from clinic.web import create_service_app
from tests.support.monitors import registered_monitor
from tests.support.openapi_schemas import Operation, operations, resolved, rows
from tests.support.tokens import claims_for, hand_made

PUBLIC = {"/healthz", "/readyz"}
WRITES = ("POST", "PUT", "PATCH", "DELETE")
# Callers whose token must be refused outright (401), whatever the operation.
FORGED = ("no token", "expired", "key not in the JWKS", "another issuer", "another service's audience", "alg none",
          "HS256 with the public key")
STAFF = tuple(STAFF_ROLES)
CALLERS = (*FORGED, "no role", *STAFF, access.DEVICE)
# Bodies written by hand where the one made from the schema would be refused as input: these calls then
# get as far as the use case (a monitor's readings reach its device token check and the room's session).
EXAMPLES = {
    ("sessions", "POST", "/vitals"): lambda: {"readings": [{"measured_at": datetime.now(timezone.utc).isoformat(), "heart_rate": 72}]},
    ("records", "POST", "/patients"): lambda: {"given_name": "Rui", "family_name": "Costa", "birth_date": "1979-11-02",
                                               "sex": "male", "email": "rui@example.org"},
}


# --- the apps, a little data in each, and the callers' tokens ---------------------------------------


class Service:
    def __init__(self, name: str, app):
        self.name, self.app = name, app
        self.settings = app.config["CLINIC_SETTINGS"]
        self.client = app.test_client()
        response = self.client.get("/openapi.json")
        assert response.status_code == 200, response.get_data(as_text=True)
        self.spec = response.get_json()
        # Ids that exist, by path parameter name: refused attempts are aimed at them.
        self.existing: dict[str, str] = {}

    def operations(self) -> list[Operation]:
        """Every operation of the OpenAPI document but the public ones."""
        return operations(self.spec, self.name, leave_out=PUBLIC)

    def staff(self, *roles: str, subject: str = "tester") -> dict:
        return {"Authorization": f"Bearer {issue_token(self.settings, subject, roles)}"}

    def rows(self) -> list[tuple[str, dict]]:
        """Every row of every table, as (table, row), but the audit's entries of refusals."""
        return [(table, row) for table, row in rows(self.app) if not (table == "audit_log" and row["outcome"] == "denied")]


def created(response) -> dict:
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def seed(services: dict[str, Service]) -> str:
    """A patient, a room, a monitor registered for an infusion room: returns the monitor's token."""
    records, scheduling, sessions = services["records"], services["scheduling"], services["sessions"]
    patient = created(records.client.post("/patients", headers=records.staff("front_desk"), json={
        "given_name": "Ana", "family_name": "Reyes", "birth_date": "1984-03-09", "sex": "female", "email": "ana@example.org"}))
    records.existing["patient_id"] = patient["id"]
    room = created(scheduling.client.post("/rooms", headers=scheduling.staff("admin"), json={"name": "Infusion 1", "kind": "infusion"}))
    scheduling.existing["room_id"] = room["id"]
    # Sessions learns of the room from scheduling's event, applied as its worker applies it.
    device = registered_monitor(sessions.app, room["id"], room["name"])
    sessions.existing.update(device_id=device["id"], room_id=room["id"])
    return device["token"]


def forged_tokens(service: Service, other: Service) -> dict[str, str | None]:
    """The tokens each service must refuse, each wrong in one way only (they carry every staff role)."""
    settings = service.settings
    now = int(time.time())
    claims = claims_for(settings, sub="intruder", **roles_claim(settings.oidc_roles_claim, STAFF))
    development_key = identity.development_key_pair(identity.development_jwks_path(settings))
    kid = identity.public_jwks(development_key.public_key())["keys"][0]["kid"]
    foreign_key = ec.generate_private_key(ec.SECP256R1())
    public_pem = development_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        "no token": None,
        "expired": identity.sign_development_token(settings, {**claims, "iat": now - 7200, "exp": now - 3600}),
        "key not in the JWKS": jwt.encode(claims, foreign_key, algorithm="ES256", headers={"kid": kid}),
        "another issuer": identity.sign_development_token(settings, {**claims, "iss": "https://idp.example.org/realms/clinic"}),
        "another service's audience": identity.sign_development_token(settings, {**claims, "aud": other.settings.oidc_audience}),
        "alg none": hand_made({"alg": "none", "typ": "JWT", "kid": kid}, claims, lambda signing_input: b""),
        "HS256 with the public key": hand_made({"alg": "HS256", "typ": "JWT", "kid": kid}, claims,
                                               lambda signing_input: hmac.new(public_pem, signing_input, hashlib.sha256).digest()),
    }


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    directory = tmp_path_factory.mktemp("matrix")
    # Thousands of refused tokens from one address: its allowance (clinic.limits) is not what is tried here.
    services = {name: Service(name, sqlite_service_app(name, directory, rate_limit_per_address="1000000/minute"))
                for name in SERVICES}
    device_token = seed(services)
    yield services, device_token
    for service in services.values():
        service.app.extensions["clinic.engine"].dispose()


def headers_of(service: Service, caller: str, forged: dict, device_token: str) -> dict:
    if caller in FORGED:
        token = forged[caller]
        return {} if token is None else {"Authorization": f"Bearer {token}"}
    if caller == "no role":
        return service.staff(subject="nobody")
    if caller == access.DEVICE:
        return {"Authorization": f"Bearer {device_token}"}
    return service.staff(caller, subject=f"{caller}-1")


# --- bodies and paths ------------------------------------------------------------------------------


def example(spec: dict, schema: dict, existing: dict, name: str = ""):
    """A value of the schema's type and form (ids that exist where the service has one of that name)."""
    schema = resolved(spec, schema)
    if "enum" in schema:
        return schema["enum"][0]
    kind, form = schema.get("type"), schema.get("format")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        wanted = schema.get("required") or list(properties)[:1]
        return {key: example(spec, properties[key], existing, key) for key in wanted if key in properties}
    if kind == "array":
        return [example(spec, schema.get("items", {}), existing)] * max(1, schema.get("minItems", 1))
    if kind == "integer":
        return max(schema.get("minimum", 1), 1)
    if kind == "number":
        return 1
    if kind == "boolean":
        return True
    if form == "uuid":
        return existing.get(name) or str(uuid.uuid4())
    if form == "date":
        return "2031-01-02"
    if form == "date-time":
        return datetime.now(timezone.utc).isoformat()
    if form == "decimal":
        return "1"
    return "Example"


def request_of(service: Service, operation: Operation, existing: dict) -> dict:
    """The path with its parameters filled, and a JSON body where the operation takes one."""
    method, path = operation.method, operation.template
    sent = {"path": operation.url(**existing), "method": method}
    body = operation.operation.get("requestBody")
    if (service.name, method, path) in EXAMPLES:
        sent["json"] = EXAMPLES[service.name, method, path]()
    elif body is not None:
        sent["json"] = example(service.spec, body["content"]["application/json"]["schema"], existing) or {"note": "x"}
    elif method in WRITES:
        sent["json"] = None
    return sent


TOO_BIG = b'{"note": "' + b"x" * (1024 * 1024) + b'"}'
# What the edge refuses from an allowed caller (415, 413, 400, 422, 414); a refused caller never gets that far.
EDGE_BAIT = {
    "no body": lambda sent: {"json": None},
    "an empty object": lambda sent: {"json": {}},
    "not JSON": lambda sent: {"data": b'{"note": ', "content_type": "application/json"},
    "JSON as text/plain": lambda sent: {"data": json.dumps(sent.get("json") or {"note": "x"}), "content_type": "text/plain"},
    "compressed": lambda sent: {"data": b"\x1f\x8b\x08\x00", "content_type": "application/json",
                                "headers": {"Content-Encoding": "gzip"}},
    "over the limit": lambda sent: {"data": TOO_BIG, "content_type": "application/json"},
    "a query past 64 bits": lambda sent: {"json": sent.get("json"), "query_string": {"limit": "9" * 30, "offset": "9" * 30}},
    "a target past the limit": lambda sent: {"json": sent.get("json"), "query_string": {"q": "q" * 5000}},
}


def shaped(response) -> bool:
    body = response.get_json(silent=True)
    return isinstance(body, dict) and set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}


# --- the walk --------------------------------------------------------------------------------------


def test_every_operation_has_an_entry_and_its_document_names_the_same_callers(walk):
    services, _ = walk
    problems = []
    for name, service in services.items():
        documented = set()
        for found in service.operations():
            key, operation = f"{found.method} {found.template}", found.operation
            documented.add(key)
            entry = MATRIX.get(name, {}).get(key)
            if entry is None:
                problems.append(f"{name}: {key} has no entry in the role matrix")
                continue
            if operation.get("x-clinic-roles") != list(entry):
                problems.append(f"{name}: {key} documents x-clinic-roles {operation.get('x-clinic-roles')}, the matrix {entry}")
            if "Who may call it" not in operation.get("description", ""):
                problems.append(f"{name}: {key} does not say who may call it")
            for status in ("401", "403", "429"):
                content = operation["responses"].get(status, {}).get("content", {}).get("application/json", {})
                if content.get("schema") != {"$ref": "#/components/schemas/Error"}:
                    problems.append(f"{name}: {key} does not document its {status} in the shared error shape")
        problems += [f"{name}: {key} is in the matrix, not in the document" for key in set(MATRIX.get(name, {})) - documented]
    assert not problems, "\n".join(problems)
    assert set(MATRIX) == set(SERVICES)


def test_only_the_callers_the_matrix_names_get_past_the_check_and_the_others_change_nothing(walk):
    services, device_token = walk
    problems, tried, let_through, refused, reached = [], 0, 0, 0, Counter()
    names = list(services)
    for index, (name, service) in enumerate(services.items()):
        forged = forged_tokens(service, services[names[(index + 1) % len(names)]])
        operations = service.operations()
        entries = MATRIX.get(name, {})

        before = service.rows()
        for operation in operations:
            method, path = operation.method, operation.template
            allowed = entries.get(f"{method} {path}", ())
            sent = request_of(service, operation, service.existing)
            for caller in CALLERS:
                if caller in allowed:
                    continue
                tried += 1
                # A forged token, or a device token where no device may call, is no identity at all: 401.
                # A valid staff token without one of the roles: 403. Whatever the body, query or target.
                expected = 403 if caller == "no role" or caller in STAFF else 401
                for bait, sending in {"a body that passes the edge": lambda sent: {"json": sent.get("json")}, **EDGE_BAIT}.items():
                    options = sending(sent)
                    headers = {**headers_of(service, caller, forged, device_token), **options.pop("headers", {})}
                    response = service.client.open(sent["path"], method=method, headers=headers, **options)
                    if response.status_code != expected or not shaped(response):
                        problems.append(f"{name}: {method} {path} as {caller} with {bait}: {response.status_code} "
                                        f"(expected {expected}) {response.get_data(as_text=True)[:200]}")
                        if 200 <= response.status_code < 300:
                            let_through += 1
                    else:
                        refused += 1
        after = service.rows()
        changed = [row for row in after if row not in before] + [row for row in before if row not in after]
        if changed:
            problems.append(f"{name}: refused callers changed {len(changed)} rows: {changed[:3]}")

        for operation in operations:
            method, path = operation.method, operation.template
            sent = request_of(service, operation, {})  # made-up ids: the check is what is tried
            for caller in entries.get(f"{method} {path}", ()):
                tried += 1
                response = service.client.open(sent["path"], method=method, json=sent.get("json"),
                                               headers=headers_of(service, caller, forged, device_token))
                reached[response.status_code] += 1
                if response.status_code in (401, 403, 429) or response.status_code >= 500:
                    problems.append(f"{name}: {method} {path} as {caller}, which the matrix allows: {response.status_code} "
                                    f"{response.get_data(as_text=True)[:200]}")

    operations = sum(len(service.operations()) for service in services.values())
    figure = (f"role matrix: {operations} operations x {len(CALLERS)} callers = {tried} attempts; "
              f"{refused} refused as expected; unauthorised successes: {let_through}; "
              f"allowed callers answered {dict(sorted(reached.items()))}")
    print(figure)
    assert tried == operations * len(CALLERS), figure
    assert not problems, figure + "\n" + "\n".join(problems)


# --- the app and the matrix must agree, or the app does not start -----------------------------------


def test_an_app_whose_operation_has_no_entry_or_whose_entry_has_no_operation_refuses_to_start(tmp_path, monkeypatch):
    records = {key: roles for key, roles in MATRIX["records"].items() if key != "GET /audit"}
    monkeypatch.setitem(MATRIX, "records", records)
    with pytest.raises(ConfigurationError, match="GET /audit has no entry in the role matrix"):
        sqlite_service_app("records", tmp_path)

    monkeypatch.setitem(MATRIX, "records", {**MATRIX["records"], "GET /audit": ("admin",), "DELETE /patients/{patient_id}": ("admin",)})
    with pytest.raises(ConfigurationError, match=r"DELETE /patients/\{patient_id\} is in the role matrix but records has no such"):
        sqlite_service_app("records", tmp_path)


def test_an_audited_operation_open_to_bedside_monitors_refuses_to_start(tmp_path, monkeypatch):
    # The audit names a staff member; a monitor's device token names none.
    monkeypatch.setitem(MATRIX, "records", {**MATRIX["records"], "GET /audit": ("admin", access.DEVICE)})
    with pytest.raises(ConfigurationError, match="GET /audit is audited, which names a staff member, but the matrix opens it to device"):
        sqlite_service_app("records", tmp_path)


def test_a_view_that_checks_no_token_in_a_service_of_the_matrix_refuses_to_start(monkeypatch):
    open_door = Blueprint("open_door", __name__, url_prefix="/open")

    @open_door.route("")
    class OpenDoor(MethodView):
        @open_door.response(200)
        def get(self):
            """Anyone may look: a view nobody guarded."""
            return {}

    monkeypatch.setitem(MATRIX, "records", {**MATRIX["records"], "GET /open": ("admin",)})
    settings = load_settings("records", env={}).with_changes(database_url="sqlite://")
    with pytest.raises(ConfigurationError, match="GET /open is in the role matrix but its view checks no token"):
        create_service_app(settings, [open_door], "Open", sa.MetaData())
