"""The container tests' timings (image builds, start-up, the patient's way through), shown at the end
of the run: ops read them as what a deploy costs, and the suite must stay quick enough for CI."""

from __future__ import annotations

from tests.support.timings import Timings

_timings = Timings("clinic in containers")
took = _timings.took
note = _timings.note


def pytest_terminal_summary(terminalreporter):
    _timings.summarise(terminalreporter)
