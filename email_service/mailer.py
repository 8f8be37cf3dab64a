"""Handing a message to an SMTP server, and the error that means "try again later"."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from typing import Protocol


class MailerError(Exception):
    """The server could not be reached or did not accept the message; nothing was delivered."""


class Mailer(Protocol):
    def send(self, message: EmailMessage) -> None:
        """Return once the server accepted `message`; raise `MailerError` otherwise."""


class SmtpMailer:
    """Plain SMTP, one connection per message: a mail catcher needs neither TLS nor auth, and a
    fresh connection means a restarted catcher never leaves us holding a dead socket."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout

    def send(self, message: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                # Raises unless the server accepted every recipient (we always send to one), so
                # returning means the message is the server's responsibility now.
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as error:
            # OSError covers refused connections, DNS failures and timeouts; SMTPException every
            # 4xx/5xx answer. Both are worth a retry here: the point of the example is that mail
            # goes out once the catcher is back, not to tell a bad mailbox from a broken server.
            raise MailerError(f"SMTP {self.host}:{self.port} did not accept the mail: {error}") from error
