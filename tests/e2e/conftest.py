"""The end-to-end tests' timings, shown at the end of the run: each journey starts the whole clinic,
and the suite must stay quick enough to run on every change."""

from __future__ import annotations

from tests.support.timings import Timings

_timings = Timings("clinic day journeys")
took = _timings.took


def pytest_terminal_summary(terminalreporter):
    _timings.summarise(terminalreporter)
