"""(Filled in.)"""

from flask_smorest import Blueprint

blp = Blueprint("care_api", __name__)
