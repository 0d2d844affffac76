"""The staff apps over HTTP, for the tests that drive a running clinic (tests/e2e, tests/containers): one
token per staff member, good for every service, and the calls they make with it."""

from __future__ import annotations

from collections.abc import Callable

import requests

from clinic.auth import issue_token
from clinic.config import Settings


class StaffClient:
    """`people` names each staff member: {who: (subject, role)}. `url(service)` is where a service answers."""

    def __init__(self, url: Callable[[str], str], token_settings: Settings, people: dict[str, tuple[str, str]],
                 audiences: list[str], timeout: float):
        self.url = url
        self.timeout = timeout
        self.tokens = {who: issue_token(token_settings, subject, [role], audience=audiences)
                       for who, (subject, role) in people.items()}
        self.http = requests.Session()

    def call(self, who: str, method: str, service: str, path: str, **kwargs) -> requests.Response:
        token = self.tokens.get(who, who)  # a device's token is passed as it is
        return self.http.request(method, self.url(service) + path, headers={"Authorization": f"Bearer {token}"},
                                 timeout=self.timeout, **kwargs)

    def ok(self, who: str, method: str, service: str, path: str, status: int = 200, **kwargs):
        response = self.call(who, method, service, path, **kwargs)
        assert response.status_code == status, f"{method} {service} {path}: {response.status_code} {response.text}"
        return response.json()

    def refused(self, who: str, method: str, service: str, path: str, status: int, code: str, **kwargs) -> dict:
        """The answer is the shared error shape with this status and code; returns the error."""
        response = self.call(who, method, service, path, **kwargs)
        assert response.status_code == status, f"{method} {service} {path}: {response.status_code} {response.text}"
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
        assert body["error"]["code"] == code, body
        return body["error"]
