"""The container tests' timings (image builds, start-up, the patient's way through), shown at the end
of the run: ops read them as what a deploy costs, and the suite must stay quick enough for CI."""

from __future__ import annotations

_timings: dict[str, float] = {}
_notes: list[str] = []


def took(name: str, seconds: float) -> None:
    _timings[name] = seconds


def note(text: str) -> None:
    """A line the run's reader must see (what ran differently from production, and why)."""
    _notes.append(text)


def pytest_terminal_summary(terminalreporter):
    if _timings or _notes:
        terminalreporter.section("clinic in containers")
        for text in _notes:
            terminalreporter.write_line(text)
        for name, seconds in _timings.items():
            terminalreporter.write_line(f"{name}: {seconds:.1f} s")
