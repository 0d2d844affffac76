"""One lock order for every path (scheduling.db.locks): a reschedule and an admin's change to the room it
moves into, racing many times on the real PostgreSQL, never deadlock (40P01, which would reach the desk
or the admin as a 503) and both always succeed.

Before the order was one, a reschedule took the calendar lock and then the room's row while a room
change took the room's row and then the calendar lock: PostgreSQL broke the cycle by aborting one.
"""

from __future__ import annotations

import threading

import pytest

from tests.integration.scheduling.support import MONDAY, local, migrated_database

ROUNDS = 60


@pytest.fixture(scope="module")
def scheduling_database(request, tmp_path_factory):
    """PostgreSQL only: SQLite runs one transaction at a time and takes no locks to order."""
    return migrated_database(request, tmp_path_factory, "postgresql")


def test_a_reschedule_racing_a_change_to_its_room_never_deadlocks(racing_clinic):
    clinic = racing_clinic
    one, two = clinic.room("Infusion 1"), clinic.room("Infusion 2")
    appointment = clinic.booked(clinic.plan(minutes=120), local(MONDAY, "09:00"), room_id=one["id"])
    desk, admin = clinic.app.test_client(), clinic.app.test_client()
    desk_headers, admin_headers = clinic.headers("front_desk"), clinic.headers("admin")
    answers: list[tuple[str, int, str]] = []

    def reschedule(into: dict, start: str) -> None:
        response = desk.post(f"/appointments/{appointment['id']}/reschedule", headers=desk_headers,
                             json={"room_id": into["id"], "starts_at": local(MONDAY, start).isoformat()})
        answers.append(("reschedule", response.status_code, response.get_data(as_text=True)))

    def rename(room: dict, number: int) -> None:
        response = admin.patch(f"/rooms/{room['id']}", headers=admin_headers, json={"name": f"{room['name']} ({number})"})
        answers.append(("room change", response.status_code, response.get_data(as_text=True)))

    for number in range(ROUNDS):
        into = (two, one)[number % 2]                    # each round moves the appointment into the other room
        start = ("09:00", "10:00")[number // 2 % 2]      # and sometimes to another time
        start_together = threading.Barrier(2)

        def together(work, *args, barrier=start_together):
            barrier.wait()
            work(*args)

        threads = [threading.Thread(target=together, args=(reschedule, into, start)),
                   threading.Thread(target=together, args=(rename, into, number))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads), "a request hung"

    refused = [(what, status, body[:300]) for what, status, body in answers if status != 200]
    assert refused == [], f"{len(refused)} of {len(answers)} requests failed"
    assert len(answers) == 2 * ROUNDS
    shown = clinic.call("GET", f"/appointments/{appointment['id']}").get_json()
    assert shown["room_id"] == (two, one)[(ROUNDS - 1) % 2]["id"] and shown["version"] == ROUNDS + 1
