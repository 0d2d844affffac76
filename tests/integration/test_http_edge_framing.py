"""The shared edge holds what the views will read, whatever its spelling or its framing.

- marshmallow's Integer is Python's int(), which takes "9_223_372_036_854_775_808" (underscores) as
  well as plain digits; the edge's 64-bit bound must hold for every spelling the view accepts, or the
  value reaches the database (SQLite: OverflowError, PostgreSQL: out of range) as a 500.
- a body past the limit is a 413 whether it came with a length or chunked, never its first MiB;
- a request refused before its body is read (a target too long) leaves a kept-alive connection usable.
"""

from __future__ import annotations

import http.client
import io
import json
from pathlib import Path

import pytest

from clinic.auth import issue_token
from clinic.config import load_settings
from clinic.http_edge import MAX_BODY_BYTES, MAX_TARGET_LENGTH
from clinic.testing.service_apps import SERVICES, sqlite_service_app, staff_token

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    directory = tmp_path_factory.mktemp("review-edge")
    built = {name: sqlite_service_app(name, directory) for name in SERVICES}
    yield built
    for app in built.values():
        app.extensions["clinic.engine"].dispose()


def _integer_query_parameters(app) -> list[tuple[str, str]]:
    spec = app.test_client().get("/openapi.json").get_json()
    found = []
    for template, item in spec["paths"].items():
        if "{" in template or "get" not in item:
            continue
        for parameter in item["get"].get("parameters", []):
            if parameter.get("in") == "query" and parameter.get("schema", {}).get("type") == "integer":
                found.append((template, parameter["name"]))
    return found


@pytest.mark.parametrize("spelling", ["9_223_372_036_854_775_808", " 9223372036854775808 ", "-9_223_372_036_854_775_809",
                                      "１" + "0" * 19])
def test_an_integer_query_parameter_past_64_bits_is_a_422_however_it_is_spelled(apps, spelling):
    failures, checked = [], 0
    for name, app in apps.items():
        client = app.test_client()
        headers = {"Authorization": f"Bearer {staff_token(app)}"}
        for template, parameter in _integer_query_parameters(app):
            checked += 1
            response = client.get(template, query_string={parameter: spelling}, headers=headers)
            body = response.get_json(silent=True) or {}
            if response.status_code != 422 or parameter not in str(body.get("error", {}).get("details")):
                failures.append(f"{name}: GET {template}?{parameter}={spelling!r}: {response.status_code} "
                                f"{response.get_data(as_text=True)[:200]}")
    assert checked  # scheduling's GET /appointments?offset=… among them
    assert not failures, "\n".join(failures)


def test_an_integer_query_parameter_with_underscores_inside_64_bits_still_works(apps):
    app = apps["scheduling"]
    response = app.test_client().get("/appointments", query_string={"limit": "1_0", "offset": "0"},
                                     headers={"Authorization": f"Bearer {staff_token(app)}"})
    assert response.status_code == 200, response.get_data(as_text=True)


# --- a chunked body past the limit ----------------------------------------------------------------
# gunicorn hands a chunked body over as a stream it has terminated (wsgi.input_terminated) with no
# Content-Length; werkzeug stops reading such a stream at MAX_CONTENT_LENGTH without saying so.


def _post_room(app, body: bytes, chunked: bool):
    headers = {"Authorization": f"Bearer {staff_token(app)}", "Content-Type": "application/json"}
    if chunked:
        return app.test_client().post("/rooms", input_stream=io.BytesIO(body), environ_overrides={"wsgi.input_terminated": True},
                                      headers={**headers, "Transfer-Encoding": "chunked"})
    return app.test_client().post("/rooms", data=body, headers=headers)


def _room_named(app, name: str) -> bool:
    rooms = app.test_client().get("/rooms", headers={"Authorization": f"Bearer {staff_token(app)}"}).get_json()
    return any(room["name"] == name for room in rooms)


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "with a length"])
def test_a_body_past_the_limit_is_a_413_never_cut_to_its_first_mebibyte(apps, chunked):
    app = apps["scheduling"]
    # Its first MiB alone is a valid room; the whole body is not JSON at all.
    head = b'{"name": "Cut short %d", "kind": "exam"}' % chunked
    body = head + b" " * (MAX_BODY_BYTES - len(head)) + b"and more"
    response = _post_room(app, body, chunked)
    assert response.status_code == 413, response.get_data(as_text=True)[:300]
    assert response.get_json()["error"]["code"] == "too_large"
    assert not _room_named(app, f"Cut short {int(chunked)}")


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "with a length"])
def test_a_body_of_exactly_the_limit_is_read_whole(apps, chunked):
    app = apps["scheduling"]
    head = b'{"name": "Exactly %d", "kind": "exam"}' % chunked
    response = _post_room(app, head + b" " * (MAX_BODY_BYTES - len(head)), chunked)
    assert response.status_code == 201, response.get_data(as_text=True)[:300]


# --- a refusal before the body is read, under the real web server ---------------------------------


def administrator(var_dir) -> dict:
    """An administrator's token for the gunicorn fixture's scheduling (signed with its var dir's key)."""
    settings = load_settings("scheduling", env={"CLINIC_VAR_DIR": str(var_dir)})
    return {"Authorization": f"Bearer {issue_token(settings, 'admin-1', ('admin',))}"}


def _refused_then_served(port: int, target: str, body: bytes, headers: dict, status: int, code: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", target, body=body, headers={"Content-Type": "application/json", **headers})
    refused = connection.getresponse()
    assert refused.status == status and json.loads(refused.read())["error"]["code"] == code
    said_close = (refused.getheader("Connection") or "").lower() == "close"
    if said_close:
        connection.close()  # the server said so: the next request opens a new connection
    connection.request("GET", "/healthz")
    answer = connection.getresponse()
    assert answer.status == 200, answer.read()


# Past gunicorn's 64 KiB drain, well under the body limit.
BIG_ROOM = json.dumps({"name": "a" * 200_000, "kind": "exam"}).encode()


def test_after_a_414_with_a_body_the_kept_alive_connection_still_serves_the_next_request(gunicorn, tmp_path):
    _refused_then_served(gunicorn, "/rooms?" + "q" * (MAX_TARGET_LENGTH + 1), BIG_ROOM, administrator(tmp_path), 414, "uri_too_long")


@pytest.mark.parametrize("caller", ["no token", "the front desk"])
def test_after_a_refused_caller_s_body_the_kept_alive_connection_still_serves_the_next_request(gunicorn, tmp_path, caller):
    # Who is asking is settled before the body is looked at; the body is still read, so the
    # connection is not dropped under the next request.
    if caller == "no token":
        _refused_then_served(gunicorn, "/rooms", BIG_ROOM, {}, 401, "unauthorized")
    else:
        settings = load_settings("scheduling", env={"CLINIC_VAR_DIR": str(tmp_path)})
        desk = {"Authorization": f"Bearer {issue_token(settings, 'desk-1', ('front_desk',))}"}
        _refused_then_served(gunicorn, "/rooms", BIG_ROOM, desk, 403, "forbidden")
