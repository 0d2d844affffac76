"""Sessions' HTTP API."""

from flask_smorest import Blueprint

blp = Blueprint("sessions", __name__, description="live infusion sessions, bedside monitors, vital signs, alerts, discharge.")
