"""One started session per room, under concurrency: nurses starting different sessions in one room at
the same moment, or one session from several devices at once. Exactly one start wins; the others get
a 409 naming the started session; one session.started leaves. On PostgreSQL the partial unique index
decides; on SQLite the serialised write transaction and the same index do.
"""

from __future__ import annotations

from clinic import events
from clinic.testing.concurrency import at_once
from tests.integration.sessions.support import Ward, checked_in_session, room

RACERS = 12


def race(ward: Ward, session_ids: list[str]) -> list[tuple[int, dict]]:
    """POST /sessions/{id}/start for each id from its own thread, all released at once."""
    headers = ward.headers("nurse")

    def start(session_id: str):
        client = ward.app.test_client()
        return lambda: (lambda response: (response.status_code, response.get_json()))(
            client.post(f"/sessions/{session_id}/start", headers=headers))

    return at_once([start(session_id) for session_id in session_ids])


def test_starts_of_different_sessions_in_one_room_racing_leave_one_started(racing_ward):
    room_id = room(racing_ward, "Infusion 1")
    waiting = [checked_in_session(racing_ward, room_id=room_id)["id"] for _ in range(RACERS)]
    results = race(racing_ward, waiting)
    assert sorted(status for status, _ in results) == [200] + [409] * (RACERS - 1), results
    [winner] = [body["id"] for status, body in results if status == 200]
    assert {body["error"]["details"]["session_id"] for status, body in results if status == 409} == {winner}
    statuses = {session_id: racing_ward.session_row(session_id)["status"] for session_id in waiting}
    assert [session_id for session_id, status in statuses.items() if status == "started"] == [winner]
    assert [event["data"]["session_id"] for event in racing_ward.events(events.SESSION_STARTED)] == [winner]


def test_one_session_started_from_several_places_at_once_starts_once(racing_ward):
    session_id = checked_in_session(racing_ward)["id"]
    results = race(racing_ward, [session_id] * RACERS)
    assert sorted(status for status, _ in results) == [200] + [409] * (RACERS - 1), results
    assert len(racing_ward.events(events.SESSION_STARTED)) == 1
    assert racing_ward.session_row(session_id)["version"] == 2
