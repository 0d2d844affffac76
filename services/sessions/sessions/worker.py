"""Sessions' worker: its consumer, its outbox relay, and the watch over the rooms. `sessions-worker`.

The watch runs every SESSIONS_WATCH_SECONDS: a monitor gone silent in a room with a started session
raises monitor_silent, and an alert nobody acknowledged in time is raised again, escalated.
"""

from clinic.config import Settings, load_settings
from clinic.inbox import Handler
from clinic.worker import Job, entry_point, run_worker
from sessions import SERVICE, db
from sessions.config import load_rules, watch_interval
from sessions.handlers import make_handlers
from sessions.services.alerts import escalate_unacknowledged, watch_monitors


def jobs(rules, every) -> list[Job]:
    return [Job("silent monitors", every, lambda uow: watch_monitors(uow, rules)),
            Job("unacknowledged alerts", every, lambda uow: escalate_unacknowledged(uow, rules))]


def handlers(settings: Settings) -> dict[str, Handler]:
    """What the worker consumes, by event type (its queue's bindings)."""
    return make_handlers()


@entry_point
def main():
    settings = load_settings(SERVICE)
    run_worker(settings, db.metadata, handlers(settings), jobs=jobs(load_rules(), watch_interval()))


if __name__ == "__main__":
    main()
