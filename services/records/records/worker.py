"""Records' worker: its consumer and its outbox relay. `records-worker`."""

from clinic.config import Settings, load_settings
from clinic.inbox import Handler
from clinic.worker import run_worker
from records import SERVICE, db
from records.handlers import HANDLERS


def handlers(settings: Settings) -> dict[str, Handler]:
    """What the worker consumes, by event type (its queue's bindings)."""
    return HANDLERS


def main():
    settings = load_settings(SERVICE)
    run_worker(settings, db.metadata, handlers(settings))


if __name__ == "__main__":
    main()
