"""Test helpers: real RabbitMQ and PostgreSQL for integration tests, and waiting without sleeping.

Enable the fixtures in a conftest.py with `pytest_plugins = ["clinic.testing.fixtures"]`.
"""

from clinic.testing.http import assert_error
from clinic.testing.wait import eventually

__all__ = ["assert_error", "eventually"]
