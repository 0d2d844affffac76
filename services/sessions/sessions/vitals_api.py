"""(Filled in.)"""

from flask_smorest import Blueprint

blp = Blueprint("vitals_api", __name__)
