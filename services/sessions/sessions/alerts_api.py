"""(Filled in.)"""

from flask_smorest import Blueprint

blp = Blueprint("alerts_api", __name__)
