"""clinic.validation.DecimalText: a dose or a temperature is taken in its documented form, whether it
comes as text or as a JSON number, so nothing is stored rounded to what the answer did not show."""

from __future__ import annotations

from decimal import Decimal

import pytest
from marshmallow import Schema, ValidationError

from clinic.validation import DOSE_TEXT, DecimalText


class Dose(Schema):
    dose = DecimalText(DOSE_TEXT, required=True)


@pytest.mark.parametrize("sent, taken", [("30", Decimal("30")), (30, Decimal("30")), (0.5, Decimal("0.5")),
                                         ("12.3456", Decimal("12.3456")), (12.3456, Decimal("12.3456"))])
def test_a_dose_in_its_form_is_taken_as_text_or_as_a_number(sent, taken):
    assert Dose().load({"dose": sent})["dose"] == taken


@pytest.mark.parametrize("sent", ["0.00001", 0.00001, 29.99999, 1e30, "1e3", True, "30 ", 100000])
def test_a_dose_outside_its_form_is_refused_as_text_and_as_a_number(sent):
    with pytest.raises(ValidationError):
        Dose().load({"dose": sent})
