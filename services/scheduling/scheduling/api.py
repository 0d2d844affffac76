"""Scheduling' HTTP API."""

from flask_smorest import Blueprint

blp = Blueprint("scheduling", __name__, description="infusion and exam rooms, office hours, appointments.")
