"""Assertions on HTTP answers, the same for every service."""

from __future__ import annotations


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The shared error shape {"error": {"code", "message", "details"}} with this status (and code);
    returns the error body."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]
