"""Records' HTTP API: reading the PHI access audit (admins only; reading it is audited too)."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from clinic import audit
from clinic.audit import READ, audited
from clinic.validation import FIRST_PLAUSIBLE_DAY, LAST_PLAUSIBLE_DAY
from clinic.web import audit_log, reading, settings

blp = Blueprint("audit", __name__, url_prefix="/audit", description="Who read or changed which patient's data.")

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_IMPLAUSIBLE = "outside the years the clinic's records can be about"


class DayOrMoment(fields.Field):
    """A day (2026-03-01, in the clinic's time zone) or a moment (2026-03-01T09:30:00Z; no zone means UTC)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError("not a day or a date-time")
        try:
            if _DAY.match(value):
                day = date.fromisoformat(value)
                if not FIRST_PLAUSIBLE_DAY <= day <= LAST_PLAUSIBLE_DAY:
                    raise ValidationError(_IMPLAUSIBLE)
                return day
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError("not a day (YYYY-MM-DD) or an ISO 8601 date-time") from None
        if not FIRST_PLAUSIBLE_DAY <= moment.date() <= LAST_PLAUSIBLE_DAY:
            raise ValidationError(_IMPLAUSIBLE)
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# What DayOrMoment takes, as the OpenAPI states it: a day, or a UTC moment to the second, 1900-2999.
# Every day of every month is stated (a client generated from the document must be able to ask for
# March 31), except February 29, which the pattern cannot tie to leap years: a document may state
# less than is accepted, never more.
_MONTH_DAY = r"((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)"
DAY_OR_MOMENT = rf"^(19[0-9]{{2}}|2[0-9]{{3}})-{_MONTH_DAY}(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z)?$"


class AuditQuery(Schema):
    patient_id = fields.UUID(load_default=None)
    since = DayOrMoment(data_key="from", load_default=None, metadata={"description": "From this day or moment, included",
                                                                      "type": "string", "pattern": DAY_OR_MOMENT})
    until = DayOrMoment(data_key="to", load_default=None, metadata={"description": "To this moment (excluded) or through this day",
                                                                    "type": "string", "pattern": DAY_OR_MOMENT})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=10_000_000))

    @validates_schema
    def ordered(self, data, **_):
        since, until = _start(data["since"]), _end(data["until"])
        if since and until and since >= until:
            raise ValidationError("must be before 'to'", "from")


class AuditEntryOut(Schema):
    id = fields.Integer()
    occurred_at = fields.DateTime()
    subject = fields.String(metadata={"description": "The token's subject"})
    roles = fields.String(metadata={"description": "The token's roles, comma-separated"})
    action = fields.String(metadata={"description": "read, search, create, update, activate or retire"})
    resource = fields.String()
    resource_id = fields.String(allow_none=True)
    patient_id = fields.String(allow_none=True)
    outcome = fields.String(metadata={"description": "allowed; denied (no role for it); failed (refused: not found, bad input, conflict)"})
    error_code = fields.String(allow_none=True)
    correlation_id = fields.String(allow_none=True)


class AuditPageOut(Schema):
    total = fields.Integer(metadata={"description": "Entries matching, over all pages"})
    offset = fields.Integer()
    limit = fields.Integer()
    entries = fields.List(fields.Nested(AuditEntryOut))


def _clinic_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=settings().timezone)


def _start(value):
    return _clinic_midnight(value) if isinstance(value, date) and not isinstance(value, datetime) else value


def _end(value):
    return _clinic_midnight(value + timedelta(days=1)) if isinstance(value, date) and not isinstance(value, datetime) else value


@blp.route("")
class AuditTrail(MethodView):
    @audited(READ, "audit_log")
    @blp.arguments(AuditQuery(), location="query", unknown=RAISE)
    @blp.response(200, AuditPageOut)
    def get(self, query):
        """Audit entries, oldest first, for one patient and/or a period; paged with `limit` and `offset`.

        A day given as `from` or `to` is a whole day in the clinic's time zone.
        """
        patient_id = str(query["patient_id"]) if query["patient_id"] else None
        audit.concerning(patient_id=patient_id)
        with reading() as connection:
            entries, total = audit.trail(connection, audit_log(), patient_id, _start(query["since"]), _end(query["until"]),
                                         query["limit"], query["offset"])
        return {"total": total, "offset": query["offset"], "limit": query["limit"], "entries": entries}
