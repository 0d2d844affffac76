"""Reading the services' OpenAPI documents, and their databases, in tests that walk every operation."""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass

import sqlalchemy as sa

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


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


@dataclass(frozen=True)
class Operation:
    """One operation of a service's document, with the path parameters of its path and its own."""

    service: str
    method: str
    template: str
    operation: dict
    path_parameters: tuple[dict, ...]
    spec: dict

    def __str__(self):
        return f"{self.service}: {self.method} {self.template}"

    def url(self, **given) -> str:
        """The path with every parameter filled: the value given by its name, else a random UUID for an
        id, else a date."""
        url = self.template
        for parameter in self.path_parameters:
            value = given.get(parameter["name"])
            if value is None:
                value = str(uuid.uuid4()) if parameter.get("schema", {}).get("format") == "uuid" else "2031-01-02"
            url = url.replace("{" + parameter["name"] + "}", value)
        return url

    @property
    def typed_path_parameters(self) -> list[str]:
        """Path parameters with a form (a UUID, a day) that a malformed value can miss."""
        return [p["name"] for p in self.path_parameters if p.get("schema", {}).get("format") in ("uuid", "date")]

    @property
    def body_schema(self) -> dict | None:
        body = self.operation.get("requestBody")
        if body is None:
            return None
        return resolved(self.spec, body["content"]["application/json"]["schema"])

    def properties(self, *types: str) -> list[str]:
        schema = self.body_schema or {}
        return [name for name, prop in schema.get("properties", {}).items()
                if resolved(self.spec, prop).get("type") in types]

    def query_parameters(self, kind: str) -> list[str]:
        return [p["name"] for p in self.operation.get("parameters", [])
                if p.get("in") == "query" and p.get("schema", {}).get("type") == kind]


def operations(spec: dict, service: str = "", methods=METHODS, leave_out=()) -> list[Operation]:
    """Every operation of the document with one of the methods, in its order, but those of the paths left out."""
    found = []
    for template, item in spec["paths"].items():
        if template in leave_out:
            continue
        shared = tuple(p for p in item.get("parameters", []) if p.get("in") == "path")
        for method, operation in item.items():
            if method.upper() in methods:
                own = tuple(p for p in operation.get("parameters", []) if p.get("in") == "path")
                found.append(Operation(service, method.upper(), template, operation, shared + own, spec))
    return found


def rows(app) -> list[tuple[str, dict]]:
    """Every row of every table of the app's database, as (table, row)."""
    engine = app.extensions["clinic.engine"]
    metadata = sa.MetaData()
    with warnings.catch_warnings():
        # Expression indexes (a room name in any case) are not reflected; only the rows matter here.
        warnings.simplefilter("ignore", sa.exc.SAWarning)
        metadata.reflect(engine)
    with engine.connect() as connection:
        return [(table.name, dict(row)) for table in metadata.sorted_tables
                for row in connection.execute(sa.select(table)).mappings()]
