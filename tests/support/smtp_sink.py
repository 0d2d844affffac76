"""A real SMTP server on a loopback port (aiosmtpd, as `make run`'s mail sink): it keeps every message
it accepts, in memory, for the test to read; it refuses recipients whose mailbox starts with "refused";
stop() and start() again make an outage on the same port."""

from __future__ import annotations

import email
import email.policy
import threading

from aiosmtpd.controller import Controller

from clinic.localservers import free_port


class _Collector:
    """aiosmtpd handler: keeps what it accepts; refuses recipients whose mailbox starts with "refused"."""

    def __init__(self):
        self.received: list[tuple[str, list[str], bytes]] = []
        # The server's event loop runs in a thread of its own; the test reads from another.
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@")[0].startswith("refused"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                                  envelope.original_content or envelope.content))
        return "250 Message accepted for delivery"


class SmtpSink:
    """A real SMTP server on a loopback port: what it received, and stop()/start() for outages."""

    def __init__(self):
        self.port = free_port()
        self.collector = _Collector()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.collector, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def envelopes(self) -> list[tuple[str, list[str], bytes]]:
        """(sender, recipients, the message as sent) of everything received, oldest first."""
        with self.collector.lock:
            return list(self.collector.received)

    def messages(self) -> list[email.message.EmailMessage]:
        """What was received, parsed back as the recipient's mail program would."""
        return [email.message_from_bytes(content, policy=email.policy.default) for _, _, content in self.envelopes]
