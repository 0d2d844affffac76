"""Records' HTTP API: the headache diary, and the summary that shows whether the infusions help.

One entry per patient per day. A second entry for the same day is refused with 409 naming the
first, which can then be corrected with PUT: a day's entry is never silently overwritten.
"""

from __future__ import annotations

from datetime import timedelta

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

from clinic.audit import CREATE, READ, UPDATE, audited
from clinic.errors import RuleViolation
from clinic.validation import PLAUSIBLE_DAY, JsonBoolean, stated_as
from clinic.web import actor, clinic_today, reading, settings, unit_of_work
from records.diary import ACUTE_MEDICATION_KINDS, entry_problem
from records.services import diary
from records.validators import not_in_future

blp = Blueprint("diary", __name__, url_prefix="/patients", description="The headache diary and its summary.")

LONGEST_LISTING_DAYS = 731


class DiaryDayIn(Schema):
    headache = JsonBoolean(required=True)
    worst_intensity = fields.Integer(load_default=None, allow_none=True, strict=True, validate=validate.Range(min=0, max=10),
                                     metadata={"description": "Worst pain of the day, 0–10; needed on a headache day"})
    acute_medication = fields.List(fields.String(validate=validate.OneOf(ACUTE_MEDICATION_KINDS)), load_default=list,
                                   metadata={"description": "Kinds of acute medication taken that day; empty when none",
                                             "uniqueItems": True})

    @validates("acute_medication")
    def each_kind_once(self, value, data_key: str):
        if len(set(value)) != len(value):
            raise ValidationError("list each kind of medication once")

    @validates_schema
    @stated_as(anyOf=[{"properties": {"headache": {"enum": [True]}, "worst_intensity": {"type": "integer", "minimum": 1, "maximum": 10}},
                       "required": ["worst_intensity"]},
                      {"properties": {"headache": {"enum": [False]}, "worst_intensity": {"type": "integer", "nullable": True,
                                                                                          "enum": [None, 0]}}}])
    def consistent(self, data, **_):
        problem = entry_problem(data["headache"], data["worst_intensity"])
        if problem:
            raise ValidationError(problem[1], problem[0])


class DiaryEntryIn(DiaryDayIn):
    entry_date = fields.Date(required=True, validate=not_in_future("a diary date"))


class DiaryEntryOut(Schema):
    id = fields.String()
    patient_id = fields.String()
    entry_date = fields.Date()
    headache = fields.Boolean()
    worst_intensity = fields.Integer(allow_none=True)
    acute_medication = fields.List(fields.String())
    recorded_by = fields.String()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class DiaryRange(Schema):
    # Days a diary can be about (clinic.validation): outside them date arithmetic would overflow rather than find nothing.
    first = fields.Date(data_key="from", load_default=None, validate=PLAUSIBLE_DAY,
                        metadata={"description": "First day (default: 89 days before the last)"})
    last = fields.Date(data_key="to", load_default=None, validate=PLAUSIBLE_DAY, metadata={"description": "Last day (default: today)"})

    @validates_schema
    def ordered(self, data, **_):
        if data["first"] and data["last"] and data["first"] > data["last"]:
            raise ValidationError("must not be after 'to'", "from")


class SummaryQuery(Schema):
    days = fields.Integer(load_default=90, validate=validate.Range(min=7, max=365),
                          metadata={"description": "The window, ending today (clinic time)"})
    around_days = fields.Integer(load_default=30, validate=validate.Range(min=7, max=90),
                                 metadata={"description": "How far before and after each infusion to look"})


class PeriodOut(Schema):
    first = fields.Date()
    last = fields.Date()
    days = fields.Integer()
    days_recorded = fields.Integer()
    headache_days = fields.Integer()
    headache_days_per_30 = fields.Float(allow_none=True, metadata={"description": "Per 30 recorded days"})
    mean_intensity = fields.Float(allow_none=True, metadata={"description": "Mean worst intensity of the headache days"})


class OveruseOut(Schema):
    flag = fields.Boolean(metadata={"description": "The acute-medication pattern meets ICHD-3 8.2 criterion B"})
    criteria = fields.List(fields.String(), metadata={"description": "ICHD-3 subtypes met: 8.2.1 ergot … 8.2.6 several classes"})
    days = fields.Dict(keys=fields.String(), values=fields.Integer())
    days_per_30 = fields.Dict(keys=fields.String(), values=fields.Float(allow_none=True))
    enough_data = fields.Boolean(metadata={"description": "At least 28 days recorded (or the whole window, if shorter)"})


class InfusionTrendOut(Schema):
    infusion_date = fields.Date()
    before = fields.Nested(PeriodOut)
    after = fields.Nested(PeriodOut)
    change_in_headache_days_per_30 = fields.Float(allow_none=True, metadata={"description": "After minus before; negative is better"})
    change_in_mean_intensity = fields.Float(allow_none=True, metadata={"description": "After minus before; negative is better"})


class SummaryOut(Schema):
    patient_id = fields.String()
    window = fields.Nested(PeriodOut)
    medication_overuse = fields.Nested(OveruseOut)
    infusions = fields.List(fields.Nested(InfusionTrendOut))


@blp.route("/<uuid:patient_id>/diary")
class Diary(MethodView):
    @audited(READ, "diary")
    @blp.arguments(DiaryRange(), location="query", unknown=RAISE)
    @blp.response(200, DiaryEntryOut(many=True))
    def get(self, query, patient_id):
        """A patient's diary entries between two days (both included), oldest first; the last 90 days by default."""
        last = query["last"] or clinic_today()
        first = query["first"] or last - timedelta(days=89)
        if (last - first).days >= LONGEST_LISTING_DAYS:
            raise RuleViolation(f"at most {LONGEST_LISTING_DAYS} days at a time", {"from": ["too far before 'to'"]})
        with reading() as connection:
            return diary.entries_between(connection, patient_id, first, last)

    @audited(CREATE, "diary", write=True)
    @blp.arguments(DiaryEntryIn())
    @blp.response(201, DiaryEntryOut)
    @blp.alt_response(409, description="The day already has an entry; correct it with PUT.")
    def post(self, data, patient_id):
        """Add a day to the diary: headache or not, the worst intensity (0–10), and the kinds of acute medication taken.

        Kinds: triptan, ergot, opioid, combination_analgesic, simple_analgesic (paracetamol, NSAIDs, aspirin).
        """
        return diary.add_entry(unit_of_work(), patient_id, data, by=actor())


@blp.route("/<uuid:patient_id>/diary/<uuid:entry_id>")
class DiaryEntryById(MethodView):
    @audited(UPDATE, "diary", write=True, resource_arg="entry_id")
    @blp.arguments(DiaryDayIn())
    @blp.response(200, DiaryEntryOut)
    def put(self, data, patient_id, entry_id):
        """Correct a day's entry (its date stays); the whole entry is replaced."""
        return diary.correct_entry(unit_of_work(), patient_id, entry_id, data, by=actor())


@blp.route("/<uuid:patient_id>/diary/summary")
class DiarySummary(MethodView):
    @audited(READ, "diary_summary")
    @blp.arguments(SummaryQuery(), location="query", unknown=RAISE)
    @blp.response(200, SummaryOut)
    def get(self, query, patient_id):
        """How the patient is doing over the last `days` days, and around each infusion.

        - headache days per 30 recorded days and the mean worst intensity of headache days;
        - whether acute medication use meets ICHD-3 medication-overuse criteria: triptans, ergots,
          opioids or combination analgesics on ≥ 10 days a month, simple analgesics on ≥ 15, or
          several classes on ≥ 10 days in total;
        - for each infusion (from the encounters) in the window: the same figures for the days
          before it and the days after it, up to `around_days` each side and never into the next
          infusion's interval, and the change. Fewer headache days and a lower intensity after an
          infusion are what the clinic is aiming for.
        """
        with reading() as connection:
            return diary.summary(connection, patient_id, clinic_today(), query["days"], query["around_days"],
                                 settings().timezone)
