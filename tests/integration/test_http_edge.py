"""The shared HTTP edge holds against hostile input, for every operation of every service.

One module because every test here walks the same operations with the same helpers (Service,
expect); split, each part would repeat them.

The operations are found by walking each app's own /openapi.json, so an operation added later is
covered without a new test. Path ids are random UUIDs: the edge answers before any lookup. Each app
runs on a migrated SQLite file (clinic.testing.service_apps); the token holds every staff role, and
an operation only a bedside monitor may call gets a device token (the edge admits one by its form;
the service's database knows it or not after the edge), so no refusal here is about who is asking:
that comes first, and tests/integration/test_role_matrix.py tries it. One test runs a real gunicorn with the shared configuration.
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import re
import socket
import uuid
from pathlib import Path
from unittest.mock import ANY

import pytest
import sqlalchemy as sa
from flask.views import MethodView
from flask_smorest import Blueprint

from clinic.auth import DEVICE_TOKEN_PREFIX, issue_token
from clinic.config import load_settings
from clinic.logs import OneLineFormatter
from clinic.testing import assert_error
from clinic.testing.service_apps import SERVICES, sqlite_service_app, staff_token
from clinic.validation import EmailAddress, EmailForm, PlainText
from clinic.web import create_service_app
from tests.support.openapi_schemas import Operation, operations, rows

ROOT = Path(__file__).resolve().parents[2]
WRITES = ("POST", "PUT", "PATCH", "DELETE")
DEVICE_HEADERS = {"Authorization": f"Bearer {DEVICE_TOKEN_PREFIX}{'x' * 43}"}
UUID_FORM = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Service:
    def __init__(self, name: str, app):
        self.name, self.app = name, app
        self.client = app.test_client()
        self.headers = {"Authorization": f"Bearer {staff_token(app)}"}
        self.spec = self.client.get("/openapi.json").get_json()

    def operations(self, methods=("GET", *WRITES)) -> list[Operation]:
        return operations(self.spec, self.name, methods)

    def send(self, operation: Operation, url: str | None = None, **kwargs):
        caller = DEVICE_HEADERS if operation.operation.get("x-clinic-roles") == ["device"] else self.headers
        headers = {**caller, **kwargs.pop("headers", {})}
        return self.client.open(url or operation.url(), method=operation.method, headers=headers, **kwargs)

    def send_json_text(self, operation: Operation, text: str, **kwargs):
        return self.send(operation, data=text.encode("utf-8", "surrogatepass"), content_type="application/json", **kwargs)

    def rows(self) -> list[tuple[str, dict]]:
        """Every row of every table of the service's database, as (table, row)."""
        return rows(self.app)


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    directory = tmp_path_factory.mktemp("edge")
    built = {name: Service(name, sqlite_service_app(name, directory)) for name in SERVICES}
    yield built
    for service in built.values():
        service.app.extensions["clinic.engine"].dispose()


@pytest.fixture(params=SERVICES)
def service(request, services) -> Service:
    return services[request.param]


def expect(failures: list, operation, response, status: int, code: str | None = None, field: str | None = None) -> dict | None:
    """Record (rather than stop at) an answer that is not `status` in the shared error shape."""
    body = response.get_json(silent=True)
    shaped = isinstance(body, dict) and set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    if response.status_code != status or not shaped or (code and body["error"]["code"] != code):
        failures.append(f"{operation}: {response.status_code} {response.get_data(as_text=True)[:300]}")
        return None
    if field and field not in json.dumps(body["error"]["details"]):
        failures.append(f"{operation}: {field} not named in {body['error']}")
    return body["error"]


def writes(service: Service) -> list[Operation]:
    return service.operations(WRITES)


# --- the walk: every write operation ------------------------------------------------------------


def test_the_walk_finds_every_service_s_operations(services):
    found = {name: len(service.operations()) for name, service in services.items()}
    assert all(found.values()), found
    # Records and scheduling write (the hostile bodies below have somewhere to go).
    assert len(writes(services["records"])) >= 8 and len(writes(services["scheduling"])) >= 8


@pytest.mark.parametrize("depth", [50_000, 100_000])
def test_json_nested_tens_of_thousands_deep_is_a_400_not_a_recursion_error(service, depth):
    failures = []
    for operation in writes(service):
        for text in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
            expect(failures, operation, service.send_json_text(operation, text), 400, "bad_request")
    assert not failures, "\n".join(failures)


def test_a_lone_surrogate_in_any_text_field_is_a_422_naming_it(service):
    failures = []
    for operation in writes(service):
        for name in operation.properties("string") or ["note"]:
            error = expect(failures, operation, service.send_json_text(operation, f'{{"{name}": "a\\ud800b"}}'), 422,
                           "validation_failed", field=name)
            if error:
                assert "\ud800" not in json.dumps(error)
    assert not failures, "\n".join(failures)
    assert not [(table, row) for table, row in service.rows() if "ud800" in str(row).lower() or "\ud800" in str(row)]


def test_a_boolean_in_a_body_is_true_or_false_never_1_or_yes(service):
    failures = []
    for operation in writes(service):
        for name in operation.properties("boolean"):
            for lenient in ("1", '"yes"', '"true"'):
                expect(failures, operation, service.send_json_text(operation, f'{{"{name}": {lenient}}}'), 422,
                       "validation_failed", field=name)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("digits", [5000, 4301], ids=["5000 digits", "10**4300"])
def test_an_integer_of_thousands_of_digits_is_a_422_naming_the_field(service, digits):
    number = "9" * digits if digits == 5000 else "1" + "0" * 4300
    failures = []
    for operation in writes(service):
        for name in operation.properties("integer", "number") or ["count"]:
            expect(failures, operation, service.send_json_text(operation, f'{{"{name}": {number}}}'), 422,
                   "validation_failed", field=name)
    assert not failures, "\n".join(failures)


def test_paging_and_other_integer_parameters_are_bounded(service):
    failures, checked = [], 0
    for operation in service.operations():
        for name in operation.query_parameters("integer"):
            for value in (str(2**63), str(-(2**63) - 1), "9" * 4000):
                checked += 1
                expect(failures, operation, service.send(operation, query_string={name: value}), 422, "validation_failed", name)
    assert not failures, "\n".join(failures)
    if service.name == "scheduling":
        assert checked  # GET /appointments?offset=…


def test_a_patch_with_no_body_or_an_empty_object_is_a_422_nothing_to_change(service):
    failures = []
    for operation in service.operations(("PATCH",)):
        for sent in ({}, {"json": {}}, {"json": None}):
            error = expect(failures, operation, service.send(operation, **sent), 422, "validation_failed")
            if error and "nothing to change" not in error["message"]:
                failures.append(f"{operation}: {error}")
    assert not failures, "\n".join(failures)


def test_a_body_is_required_where_one_is_documented_never_read_as_an_empty_object(service):
    failures = []
    for operation in writes(service):
        if operation.body_schema is not None:
            expect(failures, operation, service.send(operation), 422, "validation_failed")
            expect(failures, operation, service.send(operation, data=b"", content_type="application/json"), 422, "validation_failed")
    assert not failures, "\n".join(failures)


def test_json_sent_as_anything_but_json_is_a_415(service):
    failures = []
    for operation in writes(service):
        body = json.dumps({name: "x" for name in operation.properties("string")} or {"a": 1})
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            expect(failures, operation, service.send(operation, data=body, headers=headers), 415, "unsupported_media_type")
        compressed = gzip.compress(body.encode())
        expect(failures, operation, service.send(operation, data=compressed, headers={
            "Content-Type": "application/json", "Content-Encoding": "gzip"}), 415, "unsupported_media_type")
    assert not failures, "\n".join(failures)


def test_a_body_over_the_limit_is_a_413_in_the_shared_shape(service):
    failures = []
    too_big = b'{"a": "' + b"x" * (1024 * 1024) + b'"}'
    for operation in writes(service):
        expect(failures, operation, service.send(operation, data=too_big, content_type="application/json"), 413, "too_large")
    assert not failures, "\n".join(failures)


def test_a_ten_thousand_character_query_is_an_error_in_the_shared_shape(service):
    failures = []
    for operation in service.operations():
        expect(failures, operation, service.send(operation, query_string={"q": "a" * 10_000}), 414, "uri_too_long")
    assert not failures, "\n".join(failures)


def test_a_malformed_id_in_a_path_is_a_422_naming_it(service):
    failures = []
    for operation in service.operations():
        for name in operation.typed_path_parameters:
            for malformed in ("not-a-uuid", "Maria%0aSilva", "1234", "2031-02-30"):
                expect(failures, operation, service.send(operation, url=operation.url(**{name: malformed})), 422,
                       "validation_failed", field=name)
    assert not failures, "\n".join(failures)


def test_a_day_in_a_path_is_a_plausible_date_or_a_422_naming_it():
    days = Blueprint("days", __name__, url_prefix="/days")

    @days.route("/<date:day>")
    class Day(MethodView):
        @days.response(200)
        def get(self, day):
            """The day, as the view receives it."""
            return {"day": day.isoformat(), "weekday": day.weekday()}

    app = create_service_app(load_settings("probe", env={}).with_changes(database_url="sqlite://"), [days], "Days", sa.MetaData())
    client = app.test_client()
    assert client.get("/days/2031-01-02").get_json() == {"day": "2031-01-02", "weekday": 3}
    for malformed in ("2031-02-30", "0001-01-01", "3000-01-01", "tomorrow", "Maria%0aSilva"):
        assert assert_error(client.get(f"/days/{malformed}"), 422, "validation_failed")["details"] == {"day": [ANY]}
    parameter = client.get("/openapi.json").get_json()["paths"]["/days/{day}"]["parameters"][0]
    assert parameter["schema"]["format"] == "date" and re.search(parameter["schema"]["pattern"], "1900-01-01")


def test_a_method_a_path_does_not_have_is_a_405_with_allow(service):
    failures = []
    for template, item in service.spec["paths"].items():
        documented = {method.upper() for method in item if method.upper() in ("GET", *WRITES)}
        operation = next(op for op in service.operations() if op.template == template)
        for method in sorted({"GET", *WRITES, "TRACE"} - documented):
            response = service.client.open(operation.url(), method=method, headers=service.headers)
            if expect(failures, f"{method} {template}", response, 405, "method_not_allowed") is not None:
                allowed = {m.strip() for m in response.headers.get("Allow", "").split(",")}
                if not documented <= allowed:
                    failures.append(f"{method} {template}: Allow {response.headers.get('Allow')!r}, documented {documented}")
    assert not failures, "\n".join(failures)


# --- what is stored, sent and logged ------------------------------------------------------------


def test_a_lone_surrogate_in_an_otherwise_valid_change_is_neither_stored_nor_sent(services):
    records, scheduling = services["records"], services["scheduling"]
    desk = records.headers
    patient = {"given_name": "Ana", "family_name": "Reyes", "birth_date": "1984-03-09", "sex": "female", "email": "ana@example.org"}
    refused = records.client.post("/patients", data=json.dumps({**patient, "given_name": "Ana\ud800"}), headers=desk,
                                  content_type="application/json")
    assert_error(refused, 422, "validation_failed")
    room = {"name": "Infusion \ud800", "kind": "infusion"}
    assert_error(scheduling.client.post("/rooms", data=json.dumps(room), headers=scheduling.headers,
                                        content_type="application/json"), 422, "validation_failed")
    # The same changes without the surrogate are taken: the refusal was the surrogate's.
    registered = records.client.post("/patients", json=patient, headers=desk)
    assert registered.status_code == 201, registered.get_data(as_text=True)
    plan = {"infusion_minutes": 150, "notes": "x", "drugs": [{"name": "keto\ud800rolac", "dose": "30", "unit": "mg", "route": "IV",
                                                             "purpose": "pain"}]}
    path = f"/patients/{registered.get_json()['id']}/treatment-plans"
    error = assert_error(records.client.post(path, data=json.dumps(plan), headers=desk, content_type="application/json"), 422)
    assert error["details"] == {"drugs": {"0": {"name": [error["details"]["drugs"]["0"]["name"][0]]}}}
    for service in (records, scheduling):
        stored = [(table, row) for table, row in service.rows() if "ud800" in str(row).lower() or "\ud800" in str(row)]
        assert not stored


def test_a_change_of_nothing_writes_nothing(services):
    scheduling = services["scheduling"]
    created = scheduling.client.post("/rooms", json={"name": f"Exam {uuid.uuid4().hex[:6]}", "kind": "exam"},
                                     headers=scheduling.headers)
    assert created.status_code == 201, created.get_data(as_text=True)
    room = created.get_json()
    before = scheduling.rows()
    for sent in ({}, {"json": {}}, {"data": '{"name": "x"}', "content_type": "text/plain"}):
        response = scheduling.client.patch(f"/rooms/{room['id']}", headers=scheduling.headers, **sent)
        assert response.status_code in (415, 422), response.get_data(as_text=True)
    assert scheduling.rows() == before
    assert_error(scheduling.client.put("/office-hours", headers=scheduling.headers), 422, "validation_failed")
    assert scheduling.rows() == before


def test_the_access_log_names_the_route_and_ids_never_the_raw_path_or_query(services, caplog):
    records = services["records"]
    caplog.set_level(logging.INFO, logger="clinic.web")
    patient_id = str(uuid.uuid4())
    records.client.get("/patients/Maria%0aSilva", headers=records.headers)
    records.client.get("/patients", query_string={"name": "Maria Silva"}, headers=records.headers)
    records.client.get(f"/patients/{patient_id}", headers=records.headers)
    lines = [OneLineFormatter("%(message)s").format(record) for record in caplog.records if record.name == "clinic.web"]
    assert len(lines) == 3, lines
    assert not [line for line in lines if "Maria" in line or "Silva" in line or "\n" in line or "%0a" in line.lower()], lines
    assert lines[0].startswith("GET - 422")
    assert lines[1].startswith("GET /patients ")
    assert lines[2].startswith(f"GET /patients/<uuid:patient_id> patient_id={patient_id} ")


def test_a_log_message_is_always_one_line():
    record = logging.LogRecord("clinic.web", logging.INFO, __file__, 1, "GET %s", ("/patients/Maria\nSilva\r\u2028",), None)
    line = OneLineFormatter("%(levelname)s %(message)s").format(record)
    assert line == "INFO GET /patients/Maria\\nSilva\\r\\u2028"


def test_a_correlation_id_that_is_not_a_uuid_is_replaced_before_it_is_stored(services):
    records = services["records"]
    kept = str(uuid.uuid4())
    answered = records.client.get(f"/patients/{uuid.uuid4()}", headers={**records.headers, "X-Correlation-ID": kept.upper()})
    assert answered.headers["X-Correlation-ID"] == kept
    for offered in ("evil\x01\x7fid", "x" * 36, "123e4567-e89b-12d3-a456-42661417400g"):
        answered = records.client.get(f"/patients/{uuid.uuid4()}", headers={**records.headers, "X-Correlation-ID": offered})
        assert UUID_FORM.fullmatch(answered.headers["X-Correlation-ID"]), answered.headers
    stored = {row.get("correlation_id") for table, row in records.rows() if table == "audit_log"}
    assert stored and all(UUID_FORM.fullmatch(value or "") for value in stored), stored


def test_an_email_address_is_measured_before_its_form_is_checked():
    checked = []
    form = EmailForm()
    form.form = lambda value: checked.append(value) or value
    with pytest.raises(Exception, match="longer than 254"):
        form("a" * 1_000_000 + "@example.org")
    assert not checked
    field = EmailAddress()
    with pytest.raises(Exception, match="longer than 254"):
        field.deserialize("a" * 1_000_000 + "@example.org")
    assert field.deserialize("ana@example.org") == "ana@example.org"
    with pytest.raises(Exception, match="not an email"):
        field.deserialize("ana@")


def test_free_text_is_measured_before_it_is_searched():
    with pytest.raises(Exception, match="between 1 and 100"):
        PlainText(100)("\x00" * 1_000_000)


# --- the documents ------------------------------------------------------------------------------


def test_the_openapi_documents_are_valid_openapi_3_0(service):
    # The OpenAPI 3.0 schema as schemathesis (a development dependency) ships it, and its validator.
    import jsonschema_rs
    from schemathesis.specs.openapi.definitions import OPENAPI_30

    errors = [f"{'/'.join(map(str, error.instance_path))}: {error.message}"
              for error in jsonschema_rs.Draft4Validator(OPENAPI_30).iter_errors(service.spec)]
    assert not errors, "\n".join(errors[:20])
    bounds = [(path, value) for path, value in _walk(service.spec)
              if path[-1] in ("minimum", "maximum") and not isinstance(value, (int, float))]
    assert not bounds, bounds


def test_the_documents_state_the_constraints_the_edge_and_validators_enforce(service):
    failures = []
    for operation in service.operations():
        responses = operation.operation["responses"]
        has_input = operation.operation.get("requestBody") or operation.path_parameters or operation.query_parameters("string") \
            or operation.query_parameters("integer") or operation.query_parameters("boolean")
        if has_input and "422" not in responses:
            failures.append(f"{operation}: no 422")
        if operation.operation.get("requestBody"):
            failures += [f"{operation}: no {status}" for status in ("413", "415") if status not in responses]
        if operation.method == "PATCH" and operation.body_schema.get("minProperties") != 1:
            failures.append(f"{operation}: a PATCH body of nothing is documented as valid")
        for name in operation.query_parameters("integer"):
            schema = next(p["schema"] for p in operation.operation["parameters"] if p["name"] == name)
            if schema.get("maximum", 2**64) > 2**63 - 1:
                failures.append(f"{operation}: {name} has no bound")
    for template in ("/healthz", "/readyz"):
        if service.spec["paths"][template]["get"].get("security") != []:
            failures.append(f"{template} is documented as needing a token")
    assert not failures, "\n".join(failures)


def test_shared_validators_are_documented_where_services_use_them(services):
    scheduling = services["scheduling"].spec
    room = scheduling["components"]["schemas"]["RoomIn"]["properties"]["name"]
    assert room["maxLength"] == 100 and room["minLength"] == 1 and re.fullmatch(room["pattern"], "Infusion 1")
    assert not re.search(room["pattern"], "Infusion\n1") and not re.search(room["pattern"], "   ")
    closure = scheduling["components"]["schemas"]["ClosureIn"]["properties"]["date"]
    assert re.search(closure["pattern"], "1900-01-01") and not re.search(closure["pattern"], "1899-12-31")
    assert not re.search(closure["pattern"], "3000-01-01")
    dose = services["records"].spec["components"]["schemas"]["Drug"]["properties"]["dose"]
    assert dose["type"] == "string" and "minimum" not in dose
    assert re.search(dose["pattern"], "0.5") and re.search(dose["pattern"], "30") and not re.search(dose["pattern"], "0")


def _walk(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield path + (key,), value
            yield from _walk(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, path + (index,))


# --- a real web server --------------------------------------------------------------------------


def test_after_a_413_the_connection_closes_cleanly_or_stays_usable(gunicorn, tmp_path):
    # An administrator's: a caller without a valid token is refused 401 before its body is measured.
    settings = load_settings("scheduling", env={"CLINIC_VAR_DIR": str(tmp_path)})
    connection = http.client.HTTPConnection("127.0.0.1", gunicorn, timeout=10)
    connection.request("POST", "/rooms", body=b"x" * (1024 * 1024 + 1024), headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {issue_token(settings, 'admin-1', ('admin',))}"})
    refused = connection.getresponse()
    body = json.loads(refused.read())
    assert refused.status == 413 and body["error"]["code"] == "too_large"
    said_close = (refused.getheader("Connection") or "").lower() == "close"
    socket_in_use = connection.sock
    served = []
    for _ in range(10):
        if said_close:
            connection.close()  # the server said so: the next request opens a new connection
        connection.request("GET", "/healthz")
        answer = connection.getresponse()
        served.append((answer.status, answer.read()))
    assert said_close or connection.sock is socket_in_use
    assert [status for status, _ in served] == [200] * 10


def test_the_web_server_s_own_refusals_are_json_in_the_shared_shape(gunicorn):
    connection = http.client.HTTPConnection("127.0.0.1", gunicorn, timeout=10)
    connection.request("GET", "/rooms?name=" + "a" * 10_000)
    answer = connection.getresponse()
    assert answer.status == 414 and answer.getheader("Content-Type") == "application/json"
    assert set(json.loads(answer.read())["error"]) == {"code", "message", "details"}
    with socket.create_connection(("127.0.0.1", gunicorn), timeout=10) as raw:
        raw.sendall(b"GET /rooms?name=Maria Silva HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = raw.makefile("rb").read()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head, answer
    assert json.loads(body)["error"]["code"] == "bad_request" and b"Maria" not in body
