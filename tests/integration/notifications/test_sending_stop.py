"""The sender told to stop (the worker's SIGTERM) while the SMTP server holds its answer to a message:
that message is marked, none other is begun, and those claimed are at once free for the next sender.
On PostgreSQL and on SQLite, with the desk (conftest) as test_sending has it."""

from __future__ import annotations

import asyncio
import threading

from notifications.db import messages


def test_a_sender_told_to_stop_marks_the_message_in_hand_and_gives_back_the_others(desk, smtp_sink):
    """The worker's stop comes while the server takes its time over the first message's DATA: that
    one is marked sent (not left to go again after the lease), the others are not begun and are at
    once free for the next sender."""
    for n in range(3):
        desk.queue(desk.patient(f"patient{n}@example.org"))
    stopping = threading.Event()
    collector = smtp_sink.collector
    accept = collector.handle_DATA

    async def slow_data(server, session, envelope):
        stopping.set()   # the stop comes while the server holds its answer
        await asyncio.sleep(1)
        return await accept(server, session, envelope)

    collector.handle_DATA = slow_data
    outcome = desk.send(stopping=stopping)

    assert len(outcome.sent) == 1 and outcome.failed == outcome.retrying == []
    assert len(smtp_sink.envelopes) == 1
    rows = {row["id"]: row for row in desk.rows()}
    assert rows[outcome.sent[0]]["status"] == messages.SENT
    left = [row for row in rows.values() if row["id"] not in outcome.sent]
    assert [(row["status"], row["claimed_until"], row["attempts"]) for row in left] == [(messages.QUEUED, None, 0)] * 2

    collector.handle_DATA = accept
    assert len(desk.send().sent) == 2   # at once, at the same time: no lease to wait out
    assert len(smtp_sink.envelopes) == 3
