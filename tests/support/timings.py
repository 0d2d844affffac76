"""How long the slow suites' steps took (each starts a whole clinic), shown under a section of its own at
the end of the run: the suites must stay quick enough to run on every change."""

from __future__ import annotations


class Timings:
    """Collected during the run; summarise() from the suite's pytest_terminal_summary."""

    def __init__(self, title: str):
        self.title = title
        self._seconds: dict[str, float] = {}
        self._notes: list[str] = []

    def took(self, name: str, seconds: float) -> None:
        self._seconds[name] = seconds

    def note(self, text: str) -> None:
        """A line the run's reader must see (what ran differently from production, and why)."""
        self._notes.append(text)

    def summarise(self, terminalreporter) -> None:
        if self._seconds or self._notes:
            terminalreporter.section(self.title)
            for text in self._notes:
                terminalreporter.write_line(text)
            for name, seconds in self._seconds.items():
                terminalreporter.write_line(f"{name}: {seconds:.1f} s")
