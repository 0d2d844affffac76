"""The free slots inside the clinic's open windows: where a room and a patient are both free, on the
local grid. No framework imports: plain rules, tested in tests/unit.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from scheduling.local_time import Window, merge


class Busy:
    """The times something (a room, a patient) is already held, for fast overlap questions."""

    def __init__(self, intervals: Iterable[Window]):
        self._intervals = merge(intervals)
        self._starts = [start for start, _ in self._intervals]

    def overlaps(self, start: datetime, end: datetime) -> bool:
        # Merged intervals are sorted by start and by end alike: among those starting before `end`,
        # only the last can reach past `start`.
        index = bisect.bisect_left(self._starts, end) - 1
        return index >= 0 and self._intervals[index][1] > start


@dataclass(frozen=True)
class Slot:
    room_id: str
    starts_at: datetime
    ends_at: datetime


def ceil_to_grid(moment: datetime, grid: timedelta, tz: ZoneInfo) -> datetime:
    """The first time at or after `moment` that is on the grid of the local wall clock (08:00, 08:15, ...)."""
    local = moment.astimezone(tz)
    # Same tzinfo on both sides: the difference is wall-clock time since local midnight.
    since_midnight = local - local.replace(hour=0, minute=0, second=0, microsecond=0)
    past = since_midnight % grid
    return moment if not past else moment + (grid - past)


def free_slots(windows: Sequence[Window], length: timedelta, turnover: timedelta, grid: timedelta, tz: ZoneInfo,
               not_before: datetime, rooms: Sequence[tuple[str, Busy]], patient: Busy, limit: int) -> list[Slot]:
    """Free (room, start, end) slots inside the windows, earliest first, rooms in the order given.

    A slot starts on the local grid, lies inside one window, leaves the patient free for
    [start, end) and the room free for [start, end + turnover) (the turnover gap may run past closing).
    """
    slots: list[Slot] = []
    for window_start, window_end in windows:
        moment = ceil_to_grid(max(window_start, not_before), grid, tz)
        while moment + length <= window_end:
            end = moment + length
            if not patient.overlaps(moment, end):
                for room_id, busy in rooms:
                    if not busy.overlaps(moment, end + turnover):
                        slots.append(Slot(room_id, moment, end))
                        if len(slots) >= limit:
                            return slots
            moment += grid
    return slots
