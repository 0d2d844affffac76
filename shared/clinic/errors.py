"""Domain exceptions. Raised by domain and service code, translated to HTTP once in clinic.web."""


class ClinicError(Exception):
    """Base for errors a caller can act on."""

    http_status = 400
    code = "bad_request"

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class NotFound(ClinicError):
    http_status = 404
    code = "not_found"


class Conflict(ClinicError):
    """The change collides with existing state; details name what it collides with."""

    http_status = 409
    code = "conflict"


class RuleViolation(ClinicError):
    """The input is well-formed but a clinic rule forbids it."""

    http_status = 422
    code = "rule_violation"


class Unauthorized(ClinicError):
    http_status = 401
    code = "unauthorized"


class Forbidden(ClinicError):
    http_status = 403
    code = "forbidden"
