"""Reading what a mail catcher received, whichever catcher it is.

Two catchers stand behind port 8025 in this project:

* MailHog (the default image): ``GET /api/v2/messages`` lists every message with its raw source
  (``items[].Raw.Data``); ``DELETE /api/v1/messages`` empties it.
* Mailpit (MailHog's maintained successor, same ports): ``GET /api/v1/messages`` lists summaries
  (``messages[].ID``, newest first), ``GET /api/v1/message/<ID>/raw`` serves one message's raw
  source; ``DELETE /api/v1/messages`` empties it.
* maildump (the stand-in image where no registry is reachable): ``GET /messages/`` lists ids and
  envelopes only, ``GET /messages/<id>.source`` serves one message's raw source; ``DELETE
  /messages/`` empties it.

Both are read the same way here -- from the raw RFC 5322 source, parsed by the standard library --
so a test asserts on what the mail actually says rather than on one catcher's JSON summary.

    box = Mailbox("http://127.0.0.1:8025")
    mail = box.wait_for(lambda m: "12345" in m.subject, timeout=30)
    assert mail.to == ("ada.lovelace@example.com",)
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import getaddresses

import requests

from tests.waiting import wait_until

MAILHOG = "mailhog"
MAILPIT = "mailpit"
MAILDUMP = "maildump"


@dataclass(frozen=True)
class Mail:
    to: tuple[str, ...]  # bare addresses from the To header, lower-cased
    subject: str
    body: str  # the text/plain part, decoded
    sender: str
    headers: dict[str, str]


def parse_mail(source: bytes) -> Mail:
    message = email.message_from_bytes(source, policy=email.policy.default)
    part = message.get_body(preferencelist=("plain", "html"))
    # SMTP carries CRLF line ends; whether they survive decoding depends on the transfer encoding.
    body = (part.get_content() if part is not None else "").replace("\r\n", "\n")
    return Mail(
        to=tuple(addr.lower() for _name, addr in getaddresses(message.get_all("To", []))),
        subject=str(message.get("Subject", "")),
        body=body,
        sender=str(message.get("From", "")),
        headers={name: str(value) for name, value in message.items()},
    )


class Mailbox:
    """The messages a catcher at `base_url` holds. Which API it speaks is found on first use."""

    def __init__(self, base_url: str, *, timeout: float = 5.0, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self.kind: str | None = None

    def _get(self, path: str) -> requests.Response:
        return self.session.get(self.base_url + path, timeout=self.timeout)

    def detect(self) -> str:
        if self.kind is None:
            response = self._get("/api/v2/messages")
            if response.status_code == 200 and "items" in response.json():
                self.kind = MAILHOG
            elif (pit := self._get("/api/v1/messages")).status_code == 200 and isinstance(pit.json(), dict) and "messages" in pit.json():
                self.kind = MAILPIT
            elif self._get("/messages/").status_code == 200:
                self.kind = MAILDUMP
            else:
                raise RuntimeError(f"{self.base_url} answers none of MailHog's, Mailpit's and maildump's message APIs")
        return self.kind

    def messages(self) -> list[Mail]:
        """Every message the catcher holds, oldest first."""
        if self.detect() == MAILHOG:
            response = self._get("/api/v2/messages?limit=1000")
            response.raise_for_status()
            # MailHog lists newest first; Raw.Data is the message as received over SMTP.
            items = response.json()["items"]
            return [parse_mail(item["Raw"]["Data"].encode("utf-8", "surrogateescape")) for item in reversed(items)]
        if self.kind == MAILPIT:
            response = self._get("/api/v1/messages?limit=1000")
            response.raise_for_status()
            mails = []
            for summary in reversed(response.json()["messages"]):  # newest first: oldest first here
                raw = self._get(f"/api/v1/message/{summary['ID']}/raw")
                raw.raise_for_status()
                mails.append(parse_mail(raw.content))
            return mails
        response = self._get("/messages/")
        response.raise_for_status()
        mails = []
        for summary in sorted(response.json()["messages"], key=lambda m: m["id"]):
            raw = self._get(f"/messages/{summary['id']}.source")
            raw.raise_for_status()
            mails.append(parse_mail(raw.content))
        return mails

    def clear(self) -> None:
        path = "/api/v1/messages" if self.detect() in (MAILHOG, MAILPIT) else "/messages/"
        self.session.delete(self.base_url + path, timeout=self.timeout).raise_for_status()

    def wait_for(self, predicate: Callable[[Mail], bool], *, timeout: float = 30.0, interval: float = 0.5) -> Mail:
        """The first message matching `predicate`, polling until `timeout` seconds have passed."""
        seen: list[Mail] = []

        def match() -> Mail | None:
            nonlocal seen
            try:
                seen = self.messages()
            except requests.RequestException:
                seen = []  # the catcher may be restarting; the deadline still bounds the wait
            return next((mail for mail in seen if predicate(mail)), None)

        return wait_until(match, timeout, "a matching mail", interval, diagnostics=lambda: f"the mailbox holds {[m.subject for m in seen]}")
