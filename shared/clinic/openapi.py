"""The OpenAPI documents say what the services enforce, so a client generated from one can be trusted.

flask-smorest and apispec document marshmallow's own validators; this module adds the rest, once for
every service:

- each clinic.validation validator's own `openapi(field)` keywords (text lengths and patterns, the
  plausible years of a date, an email's length and form), and each schema-level rule's (`anyOf` for
  "at least one of");
- numbers as JSON Schema says them: a decimal sent and answered as text is a string with a decimal
  pattern (never `minimum: "0"`), an exclusive bound is exclusive, an integer without bounds is a
  64-bit one (what the edge accepts, clinic.http_edge);
- per operation, what the shared edge answers: 415 and 413 for a body, 422 wherever there is input,
  at least one property in a PATCH body;
- per operation, who may call it, from the role matrix (clinic.role_matrix): the identities under
  `x-clinic-roles`, a sentence in the description, and the 401, 403 and 429 it may answer.

While documenting each operation it also records what the edge must enforce for it (EdgeContract):
whether it takes a JSON body and which query parameters are integers. The edge reads those, so what
is documented and what is enforced come from the same place.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import marshmallow as ma
from apispec import BasePlugin

from clinic.access import who

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Decimals written as text: digits with an optional fraction (what the services write back, too).
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
NON_NEGATIVE_DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
POSITIVE_DECIMAL_PATTERN = r"^(0*[1-9][0-9]*(\.[0-9]+)?|0+\.[0-9]*[1-9][0-9]*)$"

ERROR_SCHEMA_REF = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA_REF}}}


EDGE_RESPONSES = {
    "413": _error("The body is larger than the service accepts (1 MiB)."),
    "415": _error("The body is not JSON: send it with Content-Type: application/json."),
}
AUTHORISATION_RESPONSES = {
    "401": _error("No token, or one that is not valid here: expired, from another issuer or for another service, "
                  "or badly signed."),
    "403": _error("A valid token without any of the roles in x-clinic-roles; details.required_roles names them."),
    "429": {**_error("Too many requests from this caller or address: try again after the seconds in Retry-After."),
            "headers": {"Retry-After": {"description": "Seconds to wait before trying again.",
                                        "schema": {"type": "integer", "minimum": 0}}}},
}
INPUT_RESPONSE = _error("Invalid input: details name each field at fault (a malformed id in the path, a value out of "
                        "range or of the wrong form, a missing or empty body, a body nested too deeply).")


@dataclass(frozen=True)
class EdgeContract:
    """What the shared edge holds one operation to (clinic.http_edge)."""

    takes_body: bool = False
    body_required: bool = False
    # Names of the integer query parameters (held to 64 bits; their own bounds are the schema's).
    integer_query: frozenset[str] = frozenset()


# --- fields -------------------------------------------------------------------------------------


def validator_keywords(self, field: ma.fields.Field, ret: dict, **kwargs) -> dict:
    """apispec attribute function: the keywords each validator's `openapi(field)` hook states.

    Bounds are combined with what apispec already found (the tighter wins); a second pattern is
    added as an allOf, since a schema holds one."""
    for validator in field.validators:
        hook = getattr(validator, "openapi", None)
        if not callable(hook):
            continue
        for key, value in hook(field).items():
            _merge(ret, key, value)
    return {}


def _merge(ret: dict, key: str, value) -> None:
    if key in ("minLength", "minimum", "minItems") and key in ret:
        ret[key] = max(ret[key], value)
    elif key in ("maxLength", "maximum", "maxItems") and key in ret:
        ret[key] = min(ret[key], value)
    elif key == "pattern" and "pattern" in ret and ret["pattern"] != value:
        ret.setdefault("allOf", []).append({"pattern": value})
    else:
        ret[key] = value


def null_or_the_nested(self, field: ma.fields.Field, ret: dict, **kwargs) -> dict:
    """apispec attribute function: a nested object that may be null is that object or null. apispec
    says "the object, or any object that may be null" (anyOf [$ref, {type: object, nullable}]), which
    documents every object as valid; the second branch is held to null alone."""
    if isinstance(field, ma.fields.Nested):
        for branch in ret.get("anyOf", ()):
            if branch.get("nullable") and "$ref" not in branch:
                branch["enum"] = [None]
    return {}


def numbers_as_documented(self, field: ma.fields.Field, ret: dict, **kwargs) -> dict:
    """apispec attribute function: numbers and their bounds as JSON Schema says them."""
    ranges = [v for v in field.validators if isinstance(v, ma.validate.Range)]
    if isinstance(field, ma.fields.Decimal):
        _decimal(field, ret, ranges)
    elif isinstance(field, ma.fields.Integer):
        _integer(ret, ranges)
    elif isinstance(field, ma.fields.Number):
        _exclusive_bounds(ret, ranges)
    return {}


def _decimal(field: ma.fields.Decimal, ret: dict, ranges: list) -> None:
    if not field.as_string:
        for key in ("minimum", "maximum"):
            if key in ret:
                ret[key] = _plain_number(Decimal(str(ret[key])))
        _exclusive_bounds(ret, ranges)
        return
    # Answered as text ("30", "0.5"), and taken as text too: a string, its bounds in its pattern.
    ret["type"] = "string"
    ret["format"] = "decimal"
    ret.pop("minimum", None)
    ret.pop("maximum", None)
    text_form = getattr(field, "text_form", None)  # clinic.validation.DecimalText: its own, narrower form
    if not ranges:
        if text_form is not None:
            ret["pattern"] = text_form.pattern
        return
    low = max((r.min for r in ranges if r.min is not None), default=None)
    exclusive = any(r.min is not None and not r.min_inclusive and r.min == low for r in ranges)
    highs = [r.max for r in ranges if r.max is not None]
    if low is not None and Decimal(low) == 0:
        ret["pattern"] = POSITIVE_DECIMAL_PATTERN if exclusive else NON_NEGATIVE_DECIMAL_PATTERN
    else:
        ret["pattern"] = DECIMAL_PATTERN
    bounds = []
    if low is not None:
        bounds.append(f"{'more than' if exclusive else 'at least'} {low}")
    if highs:
        bounds.append(f"at most {min(highs)}")
    ret["description"] = f"{ret['description'].rstrip('.')}. " if ret.get("description") else ""
    ret["description"] += f"A decimal number as text, {' and '.join(bounds)}."
    if text_form is not None:
        ret["pattern"] = text_form.pattern


def _integer(ret: dict, ranges: list) -> None:
    # An exclusive bound of an integer is the next integer in.
    for r in ranges:
        if r.min is not None and not r.min_inclusive and ret.get("minimum") == r.min:
            ret["minimum"] = r.min + 1
        if r.max is not None and not r.max_inclusive and ret.get("maximum") == r.max:
            ret["maximum"] = r.max - 1
    ret["minimum"] = max(ret.get("minimum", INT64_MIN), INT64_MIN)
    ret["maximum"] = min(ret.get("maximum", INT64_MAX), INT64_MAX)


def _exclusive_bounds(ret: dict, ranges: list) -> None:
    for r in ranges:
        if r.min is not None and not r.min_inclusive and "minimum" in ret:
            ret["exclusiveMinimum"] = True
        if r.max is not None and not r.max_inclusive and "maximum" in ret:
            ret["exclusiveMaximum"] = True


def _plain_number(value: Decimal):
    return int(value) if value == value.to_integral_value() else float(value)


# --- schemas and operations ---------------------------------------------------------------------


class DocumentedEdge(BasePlugin):
    """apispec plugin: schema-level rules, the edge's answers per operation, and the edge contracts.

    `contracts` is filled as operations are documented: (rule, METHOD) -> EdgeContract. `roles` is
    the service's part of the role matrix: "METHOD /path" -> the identities that may call it."""

    def __init__(self, contracts: dict, roles: dict | None = None):
        self.contracts = contracts
        self.roles = roles or {}

    def schema_helper(self, name, definition, **kwargs):
        schema = kwargs.get("schema")
        schema_class = schema if isinstance(schema, type) else type(schema)
        rules = [value.openapi_rule for klass in reversed(schema_class.__mro__)
                 for value in vars(klass).values() if hasattr(value, "openapi_rule")]
        if not rules:
            return None
        properties = definition.get("properties", {})
        stated = [rule.openapi(properties) for rule in rules]
        return stated[0] if len(stated) == 1 else {"allOf": stated}

    def operation_helper(self, path=None, operations=None, **kwargs):
        rule = kwargs.get("rule")
        for method, operation in (operations or {}).items():
            if method not in ("get", "put", "post", "patch", "delete"):
                continue
            contract = _contract(operation)
            if rule is not None:
                self.contracts[(rule.rule, method.upper())] = contract
            _document(method, operation, contract, has_path_parameters=bool(rule is not None and rule.arguments))
            identities = self.roles.get(f"{method.upper()} {path}")
            if identities is not None:
                _document_roles(operation, identities)


def _contract(operation: dict) -> EdgeContract:
    body = operation.get("requestBody")
    integers = frozenset(parameter["name"] for parameter in operation.get("parameters", [])
                         if isinstance(parameter, dict) and parameter.get("in") == "query"
                         and parameter.get("schema", {}).get("type") == "integer")
    return EdgeContract(takes_body=body is not None, body_required=bool(body and body.get("required")),
                        integer_query=integers)


def _document(method: str, operation: dict, contract: EdgeContract, has_path_parameters: bool) -> None:
    responses = operation.setdefault("responses", {})
    if contract.takes_body:
        for status, response in EDGE_RESPONSES.items():
            responses.setdefault(status, response)
        if method == "patch":
            # A PATCH changes at least one thing: `{}` is refused (422), so it is not documented as valid.
            for media in operation["requestBody"].get("content", {}).values():
                if "schema" in media:
                    media["schema"] = {"allOf": [media["schema"]], "minProperties": 1}
    has_input = contract.takes_body or has_path_parameters or any(
        isinstance(p, dict) and p.get("in") == "query" for p in operation.get("parameters", []))
    if has_input:
        responses.setdefault("422", INPUT_RESPONSE)


def _document_roles(operation: dict, identities) -> None:
    """Who may call the operation, for a staff app's developer: the identities and the refusals."""
    operation["x-clinic-roles"] = list(identities)
    sentence = f"Who may call it: {who(identities)} (x-clinic-roles)."
    operation["description"] = f"{operation['description'].rstrip()}\n\n{sentence}" if operation.get("description") else sentence
    responses = operation.setdefault("responses", {})
    for status, documented in AUTHORISATION_RESPONSES.items():
        # A view's own words for a refusal (a device token unknown or revoked) are kept, in the shared
        # error shape. flask-smorest keys a view's own responses by number, apispec's by text.
        own = responses.get(int(status)) or responses.get(status)
        if own is None:
            responses[status] = documented
        else:
            own.setdefault("content", documented["content"])


def teach_fields(api) -> None:
    """Give `api` (a flask-smorest Api) the field keywords above; before any blueprint is registered,
    since fields are documented as their blueprint is."""
    converter = api.ma_plugin.converter
    # Numbers first: a validator's own keywords (a dose's pattern) are more specific and come on top.
    converter.add_attribute_function(numbers_as_documented)
    converter.add_attribute_function(validator_keywords)
    converter.add_attribute_function(null_or_the_nested)
