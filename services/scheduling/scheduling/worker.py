"""Scheduling' worker: its consumer and its outbox relay. `scheduling-worker`."""

from clinic.config import load_settings
from clinic.worker import run_worker
from scheduling import SERVICE, db
from scheduling.handlers import HANDLERS


def main():
    run_worker(load_settings(SERVICE), db.outbox, db.inbox, HANDLERS)


if __name__ == "__main__":
    main()
