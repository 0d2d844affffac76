"""Runs the probe's consumer (and relay) as a separate process, so tests can kill it.

    python -m tests.support.probe_worker   (settings from the environment, service "probe")

PROBE_CRASH_AFTER_CONFIRM=1 makes the relay die after the broker confirmed a row but
before it marked the row published: the moment a real crash would hurt most.
"""

import os

from clinic.config import load_settings
from clinic.worker import run_worker
from tests.support import probe


def main():
    handlers = dict(probe.HANDLERS)
    if os.environ.get("PROBE_CRASH_AFTER_CONFIRM"):
        from clinic.outbox import Relay

        def crash(self, connection, rows, confirmed, failure):
            if confirmed:
                os._exit(137)
        Relay._mark = crash
    if os.environ.get("PROBE_RELAY_ONLY"):
        handlers = {}
    run_worker(load_settings("probe"), probe.metadata, handlers)


if __name__ == "__main__":
    main()
