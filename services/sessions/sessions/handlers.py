"""What sessions does with the events it consumes: one function per event type.

    scheduling.appointment.checked_in      an infusion's session opens, waiting (a follow-up visit opens none)
    scheduling.appointment.cancelled       a waiting session closes, cancelled (or, heard first, its check-in opens none)
    scheduling.room.changed                the room copy (kept by the room's version)
    records.treatment_plan.activated       the plan copy with its drugs; sessions waiting for them get them
    records.treatment_plan.retired         the plan copy is no longer active (sessions under it keep their drugs)

Each runs in the unit of work the inbox opened for the event (clinic.inbox: one transaction for a batch of events), so a
redelivered event has no second effect; each is safe to apply twice on its own as well.
"""

from __future__ import annotations

from clinic import events
from clinic.events import Event
from clinic.inbox import Handler
from clinic.unit_of_work import UnitOfWork
from sessions.services import copies
from sessions.services import sessions as lifecycle


def open_session(uow: UnitOfWork, event: Event) -> None:
    data = event.data
    if data["kind"] != "infusion":
        return
    lifecycle.open_session(uow, lifecycle.CheckIn(
        appointment_id=str(data["appointment_id"]), patient_id=str(data["patient_id"]), room_id=str(data["room_id"]),
        room_name=data["room_name"], plan_id=str(data["plan_id"]) if data.get("plan_id") else None, starts_at=data["starts_at"],
        ends_at=data["ends_at"], checked_in_at=data["checked_in_at"]))


def close_cancelled(uow: UnitOfWork, event: Event) -> None:
    data = event.data
    if data["kind"] != "infusion":
        return
    lifecycle.close_cancelled(uow, str(data["appointment_id"]), str(data["patient_id"]))


def keep_room(uow: UnitOfWork, event: Event) -> None:
    data = event.data
    copies.keep_room(uow, str(data["room_id"]), data["name"], data["kind"], data["active"], data["room_version"])


def keep_activated_plan(uow: UnitOfWork, event: Event) -> None:
    data = event.data
    # The schema's own dump gives the drugs back as JSON (decimals as text), exactly as records sent them.
    drugs = events.schema_for(event.type, event.version).dump(data)["drugs"]
    copies.keep_activated_plan(uow, str(data["plan_id"]), str(data["patient_id"]), data["infusion_minutes"], drugs,
                               data.get("plan_sequence"))


def keep_retired_plan(uow: UnitOfWork, event: Event) -> None:
    data = event.data
    copies.keep_retired_plan(uow, str(data["plan_id"]), str(data["patient_id"]), data.get("plan_sequence"))


def make_handlers() -> dict[str, Handler]:
    """The handlers by event type, for sessions' worker."""
    return dict(HANDLERS)


HANDLERS: dict[str, Handler] = {
    events.APPOINTMENT_CHECKED_IN: open_session,
    events.APPOINTMENT_CANCELLED: close_cancelled,
    events.ROOM_CHANGED: keep_room,
    events.PLAN_ACTIVATED: keep_activated_plan,
    events.PLAN_RETIRED: keep_retired_plan,
}
