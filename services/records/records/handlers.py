"""What records does with the events it consumes: one function per event type."""

from __future__ import annotations

from clinic import events
from clinic.unit_of_work import UnitOfWork
from records.services import encounters


def add_encounter(uow: UnitOfWork, event: events.Event) -> None:
    """A completed infusion session becomes one encounter in the patient's history."""
    # The schema's own dump turns loaded decimals and datetimes back into JSON text, exactly.
    as_json = events.schema_for(event.type, event.version).dump(event.data)
    encounters.record_encounter(uow, {**event.data, "drugs_given": as_json["drugs_given"], "alerts": as_json["alerts"]}, event.id)


HANDLERS = {
    events.SESSION_COMPLETED: add_encounter,
}
