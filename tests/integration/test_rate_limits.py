"""Rate limits (clinic.limits) and the browser-facing defaults (clinic.web, clinic.api_docs), on the
records app on a SQLite file: a staff member, a client address and the patient search each have an
allowance of their own (an address's counts only requests without a valid token, so a flood of made-up
tokens locks out neither the staff nor the monitors behind that address), a refusal is a 429 in the
shared shape with Retry-After, every answer carries the headers that keep it out of caches and
browsers' guesses, and the API documents are served from the service itself, and only where
CLINIC_API_DOCS says so."""

from __future__ import annotations

import logging
import re
import socket
import time
import uuid
from collections import Counter
from datetime import datetime, timezone

from limits.storage import MemoryStorage
from limits.strategies import STRATEGIES

from clinic import auth, limits
from clinic.auth import issue_token
from clinic.config import load_settings
from clinic.testing import assert_error
from clinic.testing.service_apps import sqlite_service_app
from tests.support.monitors import registered_monitor

DESK = ("front_desk",)
ANSWER_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def records(directory, **settings):
    directory.mkdir(parents=True, exist_ok=True)
    app = sqlite_service_app("records", directory, **settings)
    return app, app.test_client()


def bearer(app, subject: str, roles=DESK) -> dict:
    return {"Authorization": f"Bearer {issue_token(app.config['CLINIC_SETTINGS'], subject, roles)}"}


def search(client, headers, address="10.1.1.1"):
    return client.get("/patients", query_string={"family_name": "nobody"}, headers=headers, environ_base={"REMOTE_ADDR": address})


def assert_rate_limited(response, per: str) -> dict:
    error = assert_error(response, 429, "rate_limited")
    assert re.fullmatch(r"[1-9][0-9]*", response.headers["Retry-After"]), "Retry-After is whole seconds"
    assert error["details"]["per"] == per and error["details"]["retry_after_seconds"] == int(response.headers["Retry-After"])
    assert response.mimetype == "application/json"
    return error


def test_a_staff_member_over_the_limit_is_refused_and_another_is_not(tmp_path):
    app, client = records(tmp_path, rate_limit_per_subject="3/minute")
    unknown = f"/patients/{uuid.uuid4()}"
    for _ in range(3):
        assert client.get(unknown, headers=bearer(app, "desk-1")).status_code == 404
    assert_rate_limited(client.get(unknown, headers=bearer(app, "desk-1")), "subject")
    # The same address, another staff member: untouched.
    assert client.get(unknown, headers=bearer(app, "desk-2")).status_code == 404


def test_only_a_verified_token_spends_a_staff_members_allowance(tmp_path):
    app, client = records(tmp_path, rate_limit_per_subject="2/minute")
    token = issue_token(app.config["CLINIC_SETTINGS"], "desk-1", DESK)
    forged = token.rpartition(".")[0] + "." + "A" * 43        # desk-1's claims, a signature nobody made
    for _ in range(5):
        assert_error(client.get("/patients", query_string={"family_name": "x"}, headers={"Authorization": f"Bearer {forged}"}), 401)
    for _ in range(2):
        assert search(client, bearer(app, "desk-1")).status_code == 200


def test_the_patient_search_has_a_tighter_allowance_of_its_own(tmp_path):
    app, client = records(tmp_path, rate_limit_patient_search="2/minute", rate_limit_per_subject="100/minute")
    for _ in range(2):
        assert search(client, bearer(app, "desk-1")).status_code == 200
    error = assert_rate_limited(search(client, bearer(app, "desk-1")), "patient_search")
    assert "nobody" not in str(error), "the search terms are not repeated"
    # Other reads of the same staff member, and another's searches, go on.
    assert client.get(f"/patients/{uuid.uuid4()}", headers=bearer(app, "desk-1")).status_code == 404
    assert search(client, bearer(app, "desk-2")).status_code == 200


def test_a_client_address_over_the_limit_is_refused_but_never_the_probes(tmp_path):
    app, client = records(tmp_path, rate_limit_per_address="3/minute")
    for _ in range(3):
        assert client.get("/openapi.json", environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code == 200
    assert_rate_limited(client.get("/openapi.json", environ_base={"REMOTE_ADDR": "10.0.0.1"}), "address")
    assert client.get("/openapi.json", environ_base={"REMOTE_ADDR": "10.0.0.2"}).status_code == 200
    for _ in range(5):
        assert client.get("/healthz", environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code == 200
        assert client.get("/readyz", environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code in (200, 503)
        assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code == 200


def test_a_flood_of_refused_tokens_from_one_address_locks_out_nobody_with_a_valid_one(tmp_path):
    app, client = records(tmp_path, rate_limit_per_address="5/minute")
    flood = {"Authorization": "Bearer garbage"}
    answers = Counter(search(client, flood).status_code for _ in range(20))
    assert answers == {401: 5, 429: 15}, answers
    assert_rate_limited(search(client, {}), "address")  # no token at all is counted alike
    # Staff behind the same address (a clinic's NAT) go on, each counted by their own allowance.
    for _ in range(10):
        assert search(client, bearer(app, "desk-1")).status_code == 200
    # Another address was never touched by the flood.
    assert_error(search(client, flood, address="10.1.1.2"), 401)


def test_tokens_tried_one_after_another_are_counted_by_their_address(tmp_path):
    app, client = records(tmp_path, rate_limit_per_address="3/minute", rate_limit_per_subject="100/minute")
    token = issue_token(app.config["CLINIC_SETTINGS"], "desk-1", DESK)
    header, claims, _ = token.split(".")
    guesses = [f"{header}.{claims}.{signature}" for signature in ("A" * 43, "B" * 43, "C" * 43, "D" * 43)]
    answers = [search(client, {"Authorization": f"Bearer {guess}"}).status_code for guess in guesses]
    assert answers == [401, 401, 401, 429]
    # Whatever it sends, a caller without a valid token is refused, 429 once past the limit.
    assert_rate_limited(client.post("/patients", data=b"{not json", content_type="application/json",
                                    environ_base={"REMOTE_ADDR": "10.1.1.1"}), "address")


def test_a_monitor_behind_a_flooded_address_still_posts_its_readings(tmp_path):
    directory = tmp_path / "sessions"
    directory.mkdir()
    app = sqlite_service_app("sessions", directory, rate_limit_per_address="3/minute")
    client = app.test_client()
    monitor = {"Authorization": f"Bearer {registered_monitor(app)['token']}"}
    readings = {"readings": [{"measured_at": datetime.now(timezone.utc).isoformat(), "heart_rate": 72}]}
    made_up = {"Authorization": "Bearer dev_" + "x" * 43}
    answers = [client.post("/vitals", json=readings, headers=made_up, environ_base={"REMOTE_ADDR": "10.2.2.2"}).status_code
               for _ in range(5)]
    assert answers == [401, 401, 401, 429, 429]
    for _ in range(5):
        flood = client.get("/board", headers={"Authorization": "Bearer garbage"}, environ_base={"REMOTE_ADDR": "10.2.2.2"})
        assert_rate_limited(flood, "address")
    # The real monitor, from the same address, reaches its room (no session is started there: 409, not 429).
    for _ in range(3):
        response = client.post("/vitals", json=readings, headers=monitor, environ_base={"REMOTE_ADDR": "10.2.2.2"})
        assert_error(response, 409)
    # And an administrator from that address is answered.
    admin = bearer(app, "admin-1", ("admin",))
    assert client.get("/devices", headers=admin, environ_base={"REMOTE_ADDR": "10.2.2.2"}).status_code == 200


def test_x_forwarded_for_is_believed_only_behind_the_trusted_proxies(tmp_path):
    _, direct = records(tmp_path / "direct", rate_limit_per_address="2/minute")
    for spoofed in ("1.1.1.1", "2.2.2.2"):
        assert direct.get("/openapi.json", headers={"X-Forwarded-For": spoofed}).status_code == 200
    # Without a trusted proxy a client naming another address is still itself.
    assert_rate_limited(direct.get("/openapi.json", headers={"X-Forwarded-For": "3.3.3.3"}), "address")

    _, proxied = records(tmp_path / "proxied", rate_limit_per_address="2/minute", trusted_proxies=1)
    for _ in range(2):
        assert proxied.get("/openapi.json", headers={"X-Forwarded-For": "9.9.9.9, 10.0.0.7"}).status_code == 200
    assert_rate_limited(proxied.get("/openapi.json", headers={"X-Forwarded-For": "8.8.8.8, 10.0.0.7"}), "address")
    # The address the proxy saw counts, not what the client wrote before it.
    assert proxied.get("/openapi.json", headers={"X-Forwarded-For": "10.0.0.8"}).status_code == 200


def test_an_unreachable_shared_store_is_no_outage(tmp_path):
    # Nothing listens on port 1: the counts are kept in the process's memory meanwhile.
    app, client = records(tmp_path, rate_limit_storage_url="redis://127.0.0.1:1/0", rate_limit_per_subject="2/minute")
    for _ in range(2):
        assert search(client, bearer(app, "desk-1")).status_code == 200
    assert_rate_limited(search(client, bearer(app, "desk-1")), "subject")


def test_each_request_has_its_token_verified_and_its_caller_counted_once(tmp_path, monkeypatch):
    # The edge admits the caller; the views' guards (requires_roles, audited) only compare its roles.
    app, client = records(tmp_path, rate_limit_per_subject="2/minute")
    verified = []
    verify = auth.verify_token
    monkeypatch.setattr(auth, "verify_token", lambda settings, token: verified.append(token) or verify(settings, token))
    assert search(client, bearer(app, "desk-1")).status_code == 200  # let in
    assert_error(client.get("/audit", headers=bearer(app, "desk-1")), 403, "forbidden")  # a front desk may not
    assert len(verified) == 2
    assert_rate_limited(search(client, bearer(app, "desk-1")), "subject")  # the third request, not the fifth


def test_a_store_that_never_answers_costs_one_timeout_not_one_per_request(tmp_path, caplog):
    # A listener that takes connections and never answers: the hung store of an overloaded Redis.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        url = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
        app, client = records(tmp_path, rate_limit_storage_url=url, rate_limit_per_subject="4/minute")
        headers = bearer(app, "desk-1")
        with caplog.at_level(logging.INFO, logger="clinic.limits"):
            assert search(client, headers).status_code == 200  # waits STORE_TIMEOUT_SECONDS once
            for _ in range(3):
                started = time.perf_counter()
                assert search(client, headers).status_code == 200
                assert time.perf_counter() - started < limits.STORE_TIMEOUT_SECONDS / 2
            # Counted in memory meanwhile, so the allowance still holds.
            assert_rate_limited(search(client, headers), "subject")
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "rate limit store" in warnings[0].getMessage()


class _Store:
    """A shared store that can be taken away: counts as limits' own in-memory store does meanwhile."""

    def __init__(self):
        self.up = True
        self.asked = 0
        self.counts = STRATEGIES[limits.STRATEGY](MemoryStorage())

    def hit(self, item, *keys):
        self.asked += 1
        if not self.up:
            raise ConnectionError("the store is away")
        return self.counts.hit(item, *keys)

    def get_window_stats(self, item, *keys):
        return self.counts.get_window_stats(item, *keys)


def test_the_store_is_asked_again_only_after_a_delay_and_its_outage_is_logged_once_each_way(caplog):
    now = [1000.0]
    counts = limits._Limits(load_settings("records", env={"CLINIC_RATE_LIMIT_STORAGE_URL": "redis://127.0.0.1:1/0"}),
                            clock=lambda: now[0])
    store = counts._shared = _Store()
    item = limits.parsed("100/minute")
    with caplog.at_level(logging.INFO, logger="clinic.limits"):
        counts.hold("subject", item, "desk-1")
        store.up = False
        for _ in range(5):
            counts.hold("subject", item, "desk-1")
        assert store.asked == 2  # once up, once finding it away; the rest in memory without asking
        now[0] += limits.STORE_FIRST_RETRY_SECONDS + 0.01  # the first retry delay is at most this
        counts.hold("subject", item, "desk-1")
        assert store.asked == 3
        store.up = True
        now[0] += limits.STORE_RETRY_CAP_SECONDS + 0.01
        counts.hold("subject", item, "desk-1")
        counts.hold("subject", item, "desk-1")
        assert store.asked == 5  # back: asked for every hit again
    lines = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert [level for level, _ in lines] == ["WARNING", "INFO"], lines
    assert "unavailable (ConnectionError)" in lines[0][1] and "back after" in lines[1][1]


def test_every_kind_of_answer_carries_the_browser_headers(tmp_path):
    app, client = records(tmp_path, rate_limit_per_subject="1/minute")
    answers = {
        "view": search(client, bearer(app, "desk-1")),
        "rate limited": search(client, bearer(app, "desk-1")),
        "validation error": client.get("/patients", query_string={"name": "al"}, headers=bearer(app, "desk-2")),
        "no token": client.get("/patients", query_string={"family_name": "x"}),
        "no such path": client.get("/no/such/path"),
        "wrong method": client.delete("/patients"),
        "malformed id": client.get("/patients/not-a-uuid", headers=bearer(app, "desk-3")),
        "health": client.get("/healthz"),
        "metrics": client.get("/metrics"),
        "metrics, wrong method": client.post("/metrics"),
        "documents": client.get("/openapi.json"),
        "docs page": client.get("/docs"),
    }
    assert answers["view"].status_code == 200 and answers["rate limited"].status_code == 429
    for kind, response in answers.items():
        for name, value in ANSWER_HEADERS.items():
            assert response.headers.get(name) == value, f"{kind} ({response.status_code}): {name}"
        # /metrics answers before the app does: it must still forbid scripts and framing.
        policy = response.headers.get("Content-Security-Policy", "")
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, f"{kind}: {policy!r}"


def test_the_docs_are_served_from_the_service_itself_with_its_own_scripts_only(tmp_path):
    _, client = records(tmp_path)
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    sources = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert sources and all(source.startswith("/") and not source.startswith("//") for source in sources), sources
    assert not re.search(r"https?://", html), "nothing is loaded from another site"
    assert not re.search(r"<script>[^<]", html), "no inline script (the policy forbids them)"
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    for source in sources:
        asset = client.get(source)
        assert asset.status_code == 200 and asset.data, source
    assert client.get("/docs/static/package.json").status_code == 404    # only the files the page uses
    # The page shows the service's own document and nothing else: no online validator, which would send
    # the document to validator.swagger.io, and no top bar where another document's URL could be typed.
    start = client.get(re.search(r'<script src="([^"]*start\.js)"', html).group(1)).get_data(as_text=True)
    assert "validatorUrl: null" in start and "queryConfigEnabled: false" in start
    assert 'layout: "BaseLayout"' in start and "Standalone" not in start + html
    assert client.get("/openapi.json").get_json()["info"]["title"] == "Records"


def test_production_serves_no_api_documents_unless_asked(tmp_path):
    _, client = records(tmp_path, api_docs=False)
    for path in ("/docs", "/openapi.json", "/docs/static/swagger-ui-bundle.js"):
        assert_error(client.get(path), 404)
    assert client.get("/healthz").status_code == 200
