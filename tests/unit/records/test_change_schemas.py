"""A PATCH body must change something: records' change schemas refuse an empty one themselves,
whatever the shared edge in front of them does, while a field set to null is still a change."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from records.diagnoses_api import DiagnosisPatch
from records.patients_api import PatientPatch
from records.plans_api import PlanPatch


@pytest.mark.parametrize("schema, change", [(PatientPatch, {"phone": None}), (DiagnosisPatch, {"status": "resolved"}),
                                            (PlanPatch, {"notes": None})])
def test_an_empty_change_is_refused_and_any_field_given_is_a_change(schema, change):
    with pytest.raises(ValidationError, match="at least one"):
        schema().load({})
    assert schema().load(change) == change
