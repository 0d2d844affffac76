"""Records' worker: its consumer, its outbox relay, and the job that folds family names for search.
`records-worker`."""

from datetime import timedelta

from clinic.config import Settings, load_settings
from clinic.inbox import Handler
from clinic.worker import Job, entry_point, run_worker
from records import SERVICE, db
from records.handlers import HANDLERS
from records.services.patients import refold_family_names

# Each minute: a patient an older pod registered during a rolling deploy is found by family name a
# minute later at most. A run is one query, on the few rows with no fold or changed in the last hour
# (both found by index: family_search, updated_at).
REFOLD_EVERY = timedelta(minutes=1)


def handlers(settings: Settings) -> dict[str, Handler]:
    """What the worker consumes, by event type (its queue's bindings)."""
    return HANDLERS


def jobs() -> list[Job]:
    return [Job("family name search", REFOLD_EVERY, refold_family_names)]


@entry_point
def main():
    settings = load_settings(SERVICE)
    run_worker(settings, db.metadata, handlers(settings), jobs=jobs())


if __name__ == "__main__":
    main()
