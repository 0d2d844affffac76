"""Reading the services' OpenAPI documents in tests that walk every operation."""

from __future__ import annotations


def resolved(spec: dict, schema: dict) -> dict:
    """A schema with its $ref followed and an allOf merged: properties and required lists joined, any
    other keyword taken from the parts (enough to list a body's properties or write an example)."""
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    if "allOf" not in schema:
        return schema
    merged = {key: value for key, value in schema.items() if key != "allOf"}
    for part in schema["allOf"]:
        part = resolved(spec, part)
        merged.setdefault("properties", {}).update(part.get("properties", {}))
        merged.setdefault("required", []).extend(part.get("required", []))
        merged.update({key: value for key, value in part.items() if key not in ("properties", "required")})
    return merged
