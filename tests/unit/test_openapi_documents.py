"""What the OpenAPI documents promise is what the validators hold: a client generated from them, or a
fuzzer, must not find a body the document calls valid refused for its form."""

from __future__ import annotations

import re

import jsonschema_rs
import pytest

from clinic.testing.service_apps import sqlite_service_app


@pytest.fixture(scope="module")
def sessions_document(tmp_path_factory):
    app = sqlite_service_app("sessions", tmp_path_factory.mktemp("openapi"))
    return app.test_client().get("/openapi.json").get_json()


def test_a_nested_object_that_may_be_null_is_documented_as_that_object_or_null(sessions_document):
    escort = sessions_document["components"]["schemas"]["DischargeIn"]["properties"]["escort"]
    others = [branch for branch in escort["anyOf"] if "$ref" not in branch]
    assert others == [{"type": "object", "nullable": True, "enum": [None]}]
    # Read as JSON Schema, the branch lets null through and nothing else.
    validator = jsonschema_rs.validator_for({"enum": others[0]["enum"]})
    assert validator.is_valid(None) and not validator.is_valid({}) and not validator.is_valid({"anything": 1})


def test_a_decimal_with_its_own_text_form_documents_it_even_without_bounds(sessions_document):
    temperature = sessions_document["components"]["schemas"]["ReadingIn"]["properties"]["temperature"]
    assert temperature["pattern"]
    assert re.fullmatch(temperature["pattern"], "36.8") and not re.fullmatch(temperature["pattern"], "3.68e1")
