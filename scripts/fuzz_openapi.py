"""`python scripts/fuzz_openapi.py`: a bounded schemathesis run over every service's OpenAPI document.

Each service's app runs in this process (WSGI, no server) on a new SQLite file, called with a token that
holds every staff role. For each operation schemathesis sends the document's examples, its coverage cases
(boundaries, missing and wrong-typed values, undeclared methods) and `--examples` generated cases, and
checks every answer: no 5xx; status, content type, headers and body as documented; a request valid by the
document is accepted and one invalid by it refused; a 405 names the allowed methods (Allow); auth enforced.

Prints, per service, the operations, the requests sent and the failures by kind, then a few examples of
each failure; exits 1 when anything failed or a document could not be used. `--examples 30` (the default)
takes about a minute for the four services.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import schemathesis
from schemathesis.engine import events, from_schema
from schemathesis.transport.wsgi import WSGITransport

from clinic.limits import LOAD_TEST_LIMITS
from clinic.testing.service_apps import SERVICES, sqlite_service_app, staff_token

# /readyz answers 503 when the broker is away, and a run in one process has no broker: that 503 is
# its answer, not a fault, so the operation is left out.
LEFT_OUT = {"GET /readyz"}


@dataclass
class Figures:
    service: str
    operations: set[str] = field(default_factory=set)
    requests: int = 0
    failures: collections.Counter = field(default_factory=collections.Counter)
    errors: collections.Counter = field(default_factory=collections.Counter)
    samples: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.failures and not self.errors


def fuzz(service: str, examples: int, seed: int, directory: Path, samples: int = 3) -> Figures:
    """One service's run: its figures, with up to `samples` examples of each kind of failure."""
    # Only warnings and errors: a request line per case would bury the figures.
    # The operations are fuzzed, not the rate limits: one caller sends thousands of requests.
    app = sqlite_service_app(service, directory, log_level="WARNING", **LOAD_TEST_LIMITS)
    config = schemathesis.Config.from_dict({
        "seed": seed,
        "generation": {"max-examples": examples},
        "headers": {"Authorization": f"Bearer {staff_token(app)}"},
        # Bounded: the operations one by one; sequences of calls are the integration tests' job.
        "phases": {"stateful": {"enabled": False}},
        "checks": {"enabled": True},
        # Nothing kept between runs (schemathesis would write .schemathesis/ in the working directory).
        "cache": {"enabled": False},
    })
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, config=config)
    for label in LEFT_OUT:
        method, path = label.split(" ", 1)
        schema = schema.exclude(method=method, path=path)
    figures = Figures(service)
    started = time.perf_counter()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            _count(figures, event, samples)
        elif isinstance(event, events.NonFatalError):
            kind = f"{type(event.value).__name__} (the document or the run)"
            figures.errors[kind] += 1
            if len(figures.samples[kind]) < samples:
                figures.samples[kind].append(f"{event.label}: {_first_lines(str(event.value), 6)}")
        elif isinstance(event, events.FatalError):
            figures.errors["fatal"] += 1
            figures.samples["fatal"].append(str(event.exception))
    figures.seconds = time.perf_counter() - started
    app.extensions["clinic.engine"].dispose()
    return figures


def _count(figures: Figures, event: events.ScenarioFinished, samples: int) -> None:
    recorder = event.recorder
    if event.label:
        figures.operations.add(event.label)
    figures.requests += len(recorder.interactions)
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.failure_info is None:
                continue
            interaction = recorder.interactions.get(case_id)
            answer = interaction.response if interaction is not None else None
            kind = check.name
            if kind == "positive_data_acceptance":
                # A clinic rule (a past start, a closed day) refuses with rule_violation; a validator with
                # validation_failed. Told apart, since only the second is about what the document says.
                kind = f"{kind} ({_error_code(answer)})"
            figures.failures[kind] += 1
            if len(figures.samples[kind]) < samples:
                case = recorder.cases[case_id].value
                failure = check.failure_info.failure
                body = "" if case.body is None or type(case.body).__name__ == "NotSet" else f" body={str(case.body)[:160]}"
                query = f" query={case.query}" if case.query else ""
                answered = f"\n        <- {answer.status_code} {answer.content[:240].decode(errors='replace')}" if answer else ""
                figures.samples[kind].append(
                    f"{event.label}: {case.method} {case.formatted_path}{query}{body}\n"
                    f"        -> {failure.title}: {_first_lines(failure.message, 3)}{answered}")


def _error_code(answer) -> str:
    try:
        return answer.json()["error"]["code"]
    except Exception:  # noqa: BLE001 - no answer, not JSON, not the error shape
        return "no error code"


def _first_lines(text: str, count: int) -> str:
    return " | ".join(line for line in str(text).splitlines()[:count] if line.strip())


def _probes_without_socket_options() -> None:
    """schemathesis 4.32 sends its auth probes (ignored_auth) through the WSGI transport with requests'
    socket options (max_redirects, verify, ...), which a WSGI client refuses; drop them there."""
    send = WSGITransport.send
    if getattr(send, "_clinic_wrapped", False):
        return

    def without_socket_options(self, case, *, session=None, **kwargs):
        if session is None:
            for name in ("max_redirects", "verify", "cert", "proxies"):
                kwargs.pop(name, None)
        return send(self, case, session=session, **kwargs)

    without_socket_options._clinic_wrapped = True
    WSGITransport.send = without_socket_options


def report(all_figures: list[Figures], show_samples: bool = True) -> str:
    lines = [f"{'service':<15}{'operations':>11}{'requests':>10}{'failures':>10}{'errors':>8}{'seconds':>9}"]
    for figures in all_figures:
        lines.append(f"{figures.service:<15}{len(figures.operations):>11}{figures.requests:>10}"
                     f"{sum(figures.failures.values()):>10}{sum(figures.errors.values()):>8}{figures.seconds:>9.1f}")
    total = sum(len(f.operations) for f in all_figures), sum(f.requests for f in all_figures)
    lines.append(f"{'all':<15}{total[0]:>11}{total[1]:>10}{sum(sum(f.failures.values()) for f in all_figures):>10}"
                 f"{sum(sum(f.errors.values()) for f in all_figures):>8}")
    for figures in all_figures:
        if figures.clean:
            continue
        lines.append(f"\n{figures.service}: failures by kind")
        for kind, count in sorted({**figures.failures, **figures.errors}.items()):
            lines.append(f"  {kind}: {count}")
            if show_samples:
                lines.extend(f"    {sample}" for sample in figures.samples[kind])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=30, help="generated cases per operation (default 30)")
    parser.add_argument("--seed", type=int, default=1, help="the run's seed, for a run that can be repeated (default 1)")
    parser.add_argument("--service", action="append", choices=SERVICES, help="only this service (repeatable)")
    parser.add_argument("--samples", type=int, default=3, help="examples shown of each kind of failure (default 3)")
    parser.add_argument("--quiet", action="store_true", help="figures only, no examples of failures")
    args = parser.parse_args(argv)
    _probes_without_socket_options()
    with tempfile.TemporaryDirectory(prefix="fuzz-openapi-") as directory:
        results = [fuzz(service, args.examples, args.seed, Path(directory), args.samples) for service in args.service or SERVICES]
    print(f"schemathesis {schemathesis.__version__}: {args.examples} generated cases per operation, seed {args.seed}")
    print(report(results, show_samples=not args.quiet))
    return 0 if all(figures.clean for figures in results) else 1


if __name__ == "__main__":
    sys.exit(main())
