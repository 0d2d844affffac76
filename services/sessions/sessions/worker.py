"""Sessions' worker: its consumer and its outbox relay. `sessions-worker`."""

from clinic.config import load_settings
from clinic.worker import run_worker
from sessions import SERVICE, db
from sessions.handlers import HANDLERS


def main():
    run_worker(load_settings(SERVICE), db.metadata, HANDLERS)


if __name__ == "__main__":
    main()
