"""Scheduling's worker: its consumer and its outbox relay. `scheduling-worker`."""

from clinic.config import load_settings
from clinic.worker import run_worker
from scheduling import SERVICE, db
from scheduling.config import load_rules
from scheduling.handlers import make_handlers


def main():
    settings = load_settings(SERVICE)
    run_worker(settings, db.metadata, make_handlers(load_rules(settings)))


if __name__ == "__main__":
    main()
