"""The end-to-end tests' timings, shown at the end of the run: each journey starts the whole clinic,
and the suite must stay quick enough to run on every change."""

from __future__ import annotations

_timings: dict[str, float] = {}


def took(name: str, seconds: float) -> None:
    _timings[name] = seconds


def pytest_terminal_summary(terminalreporter):
    if _timings:
        terminalreporter.section("clinic day journeys")
        for name, seconds in _timings.items():
            terminalreporter.write_line(f"{name}: {seconds:.1f} s")
