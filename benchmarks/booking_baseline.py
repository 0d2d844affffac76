"""The baseline of benchmarks/booking.py: the web stack with nothing of the product in it.

A plain Flask app whose one endpoint reads the same JSON body a booking sends and inserts one row
in its own transaction, through clinic.db.create_engine (the same pool and driver settings as the
services). Served by the same gunicorn command line as the scheduling service, its requests/s are
the ceiling a booking endpoint could reach on this machine. Not part of the product.

    DATABASE_URL=postgresql://... gunicorn 'benchmarks.booking_baseline:create_app()'
"""

from __future__ import annotations

import os
from datetime import datetime

import sqlalchemy as sa
from flask import Flask, jsonify, request

from clinic.db import UtcDateTime, create_engine, new_id, utcnow

metadata = sa.MetaData()
rows = sa.Table(
    "baseline_rows",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("patient_id", sa.String(36), nullable=False),
    sa.Column("starts_at", UtcDateTime(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)


def create_app() -> Flask:
    engine = create_engine(os.environ["DATABASE_URL"])
    app = Flask("booking-baseline")

    @app.post("/rows")
    def insert_one_row():
        body = request.get_json()
        row = {"id": new_id(), "patient_id": body["patient_id"], "starts_at": datetime.fromisoformat(body["starts_at"]),
               "created_at": utcnow()}
        with engine.begin() as connection:
            connection.execute(rows.insert().values(**row))
        return jsonify({**row, "starts_at": row["starts_at"].isoformat(), "created_at": row["created_at"].isoformat()}), 201

    return app
