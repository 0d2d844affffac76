"""What the care record's tests share (medications, pain scores, visitors): the requests they send,
the rows they count, and requests sent all at once from threads."""

from __future__ import annotations

import threading
from datetime import datetime

import sqlalchemy as sa

from clinic.auth import issue_token
from sessions.db import care
from tests.integration.sessions.support import Ward


def drug_id(session: dict, name: str) -> str:
    """The id the session lists for its plan drug of this name."""
    [found] = [drug["id"] for drug in session["drugs"] if drug["name"] == name]
    return found


def give(ward: Ward, session_id: str, session_drug_id: str, dose: str = "30", unit: str = "mg", route: str = "IV",
         given_at: datetime | None = None, role: str = "nurse", subject: str = "nurse-ana", **extra):
    """POST /sessions/{id}/medications; given now (the ward's clock) unless told otherwise."""
    body = {"session_drug_id": session_drug_id, "dose": dose, "unit": unit, "route": route,
            "given_at": (given_at or ward.clock()).isoformat(), **extra}
    return ward.call("POST", f"/sessions/{session_id}/medications", role=role, subject=subject, json=body)


def given(ward: Ward, session_id: str, session_drug_id: str, **options) -> dict:
    response = give(ward, session_id, session_drug_id, **options)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def count(ward: Ward, table: sa.Table) -> int:
    with ward.engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def care_rows(ward: Ward) -> dict[str, int]:
    """How many rows each care table holds: a refused request leaves these as they were."""
    return {table.name: count(ward, table) for table in (care.medications, care.medication_ledgers, care.pain_scores, care.visitors)}


def race(ward: Ward, requests: list[tuple[str, dict]], role: str = "nurse") -> list[tuple[int, dict]]:
    """POST each (path, body) from its own thread, all released at once: [(status, answer)] in order."""
    headers = {"Authorization": f"Bearer {issue_token(ward.settings, 'racer', [role])}"}
    start = threading.Barrier(len(requests))
    results: list[tuple[int, dict] | None] = [None] * len(requests)

    def racer(index: int, path: str, body: dict) -> None:
        client = ward.app.test_client()
        start.wait()
        response = client.post(path, json=body, headers=headers)
        results[index] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=racer, args=(index, path, body)) for index, (path, body) in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(result is not None for result in results), "a racer did not finish"
    return results
