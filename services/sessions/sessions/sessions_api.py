"""(Filled in.)"""

from flask_smorest import Blueprint

blp = Blueprint("sessions_api", __name__)
