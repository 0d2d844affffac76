"""(Filled in.)"""

from flask_smorest import Blueprint

blp = Blueprint("board_api", __name__)
