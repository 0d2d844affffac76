"""SMTP sink for test and development deployments: every message accepted on MAIL_SINK_PORT (1025)
is written, as sent, to a file in the Maildir MAIL_SINK_DIR (/var/mail-sink/new/), with the
envelope's sender and recipients added as X-Envelope-From / X-Envelope-To headers (they are not
always in the message's own headers).

The log says that a message was stored and its size, never an address or any content: these are
patients' emails.
"""

import asyncio
import logging
import mailbox
import os
import signal

from aiosmtpd.smtp import SMTP

log = logging.getLogger("mail-sink")


class MaildirSink:
    """aiosmtpd handler keeping each message in one Maildir."""

    def __init__(self, path):
        # Maildir(create=True) makes tmp/, new/ and cur/ only when the top directory is missing, and a
        # volume's is always there.
        for part in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(path, part), exist_ok=True)
        self.maildir = mailbox.Maildir(path, create=False)

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content or b""
        envelope_headers = (
            f"X-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        # Maildir writes to tmp/ and renames into new/, so a reader never sees half a message.
        key = self.maildir.add(envelope_headers + content)
        log.info("stored message %s (%d bytes, %d recipients)", key, len(content), len(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


async def serve(path, host, port):
    # aiosmtpd logs commands and peers at INFO and DEBUG ("mail.log"): addresses are kept out of logs.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    handler = MaildirSink(path)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="mail-sink", data_size_limit=10 * 1024 * 1024), host, port
    )
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    log.info("accepting SMTP on %s:%d, storing messages in %s", host, port, path)
    await stopping.wait()
    server.close()
    await server.wait_closed()
    log.info("stopped")


def main():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(
        serve(
            os.environ.get("MAIL_SINK_DIR", "/var/mail-sink"),
            os.environ.get("MAIL_SINK_HOST", "0.0.0.0"),
            int(os.environ.get("MAIL_SINK_PORT", "1025")),
        )
    )


if __name__ == "__main__":
    main()
