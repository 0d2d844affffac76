"""Notifications' worker: its consumer and its outbox relay. `notifications-worker`."""

from clinic.config import load_settings
from clinic.worker import run_worker
from notifications import SERVICE, db
from notifications.handlers import HANDLERS


def main():
    run_worker(load_settings(SERVICE), db.metadata, HANDLERS)


if __name__ == "__main__":
    main()
