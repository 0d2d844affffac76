"""Notifications' worker: its consumer, its outbox relay, and its mail jobs. `notifications-worker`.

The consumer only records each email in the mail log; the sender job sends what is due over SMTP
outside any transaction (notifications.services.sending). The reminder job queues the day-before
reminders once the clinic's reminder hour has come.
"""

from datetime import timedelta

from clinic.config import Settings, load_settings
from clinic.inbox import Handler
from clinic.worker import Job, entry_point, run_worker
from notifications import SERVICE, db
from notifications.config import MailSettings, load_mail_settings
from notifications.handlers import make_handlers
from notifications.services import sending
from notifications.services.reminders import queue_reminders, reminder_rules

# Often, so that an email leaves within a second of its event: a look for due messages is one
# indexed query when there are none.
SEND_EVERY = timedelta(seconds=0.2)


def handlers(settings: Settings) -> dict[str, Handler]:
    """What the worker consumes, by event type (its queue's bindings), with the on-call addresses."""
    return make_handlers(load_mail_settings(settings=settings))


def jobs(mail: MailSettings) -> list[Job]:
    rules = reminder_rules(mail)
    return [*sending.jobs(mail, every=SEND_EVERY),
            Job("reminders", timedelta(minutes=1), lambda uow: queue_reminders(uow, rules))]


@entry_point
def main():
    settings = load_settings(SERVICE)
    mail = load_mail_settings(settings=settings)
    run_worker(settings, db.metadata, make_handlers(mail), jobs=jobs(mail))


if __name__ == "__main__":
    main()
