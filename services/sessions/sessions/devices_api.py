"""(Filled in.)"""

from flask_smorest import Blueprint

blp = Blueprint("devices_api", __name__)
