"""Scheduling's worker: its consumer and its outbox relay. `scheduling-worker`."""

from clinic.config import Settings, load_settings
from clinic.inbox import Handler
from clinic.worker import entry_point, run_worker
from scheduling import SERVICE, db
from scheduling.config import load_rules
from scheduling.handlers import make_handlers


def handlers(settings: Settings) -> dict[str, Handler]:
    """What the worker consumes, by event type (its queue's bindings), bound to the clinic's rules."""
    return make_handlers(load_rules(settings))


@entry_point
def main():
    settings = load_settings(SERVICE)
    run_worker(settings, db.metadata, handlers(settings))


if __name__ == "__main__":
    main()
