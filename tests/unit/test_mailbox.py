"""The one adapter that reads mail in tests understands MailHog, Mailpit and maildump (canned answers)."""

from __future__ import annotations

import pytest

from tests.mailbox import MAILDUMP, MAILHOG, MAILPIT, Mailbox

RAW = b"From: shop@example.com\r\nTo: Ada <ADA@example.com>\r\nSubject: Order 1\r\n\r\nThanks!\r\n"


class Answer:
    def __init__(self, status: int, payload=None, content: bytes = b"") -> None:
        self.status_code, self._payload, self.content = status, payload, content

    def json(self):
        return self._payload

    def raise_for_status(self) -> None:
        assert self.status_code < 400


class Canned:
    def __init__(self, routes: dict[str, Answer]) -> None:
        self.routes, self.deleted = routes, []

    def get(self, url: str, timeout: float) -> Answer:
        path = url.split("8025", 1)[1]
        return self.routes.get(path, self.routes.get(path.split("?")[0], Answer(404)))

    def delete(self, url: str, timeout: float) -> Answer:
        self.deleted.append(url.split("8025", 1)[1])
        return Answer(200)


@pytest.mark.parametrize("kind, routes, cleared", [
    (MAILHOG, {"/api/v2/messages": Answer(200, {"items": [{"Raw": {"Data": RAW.decode()}}]})}, "/api/v1/messages"),
    (MAILPIT, {"/api/v1/messages": Answer(200, {"total": 1, "messages": [{"ID": "abc"}]}),
               "/api/v1/message/abc/raw": Answer(200, content=RAW)}, "/api/v1/messages"),
    (MAILDUMP, {"/messages/": Answer(200, {"messages": [{"id": 7}]}), "/messages/7.source": Answer(200, content=RAW)}, "/messages/"),
])
def test_each_catcher_is_read_from_the_raw_message(kind, routes, cleared):
    session = Canned(routes)
    box = Mailbox("http://127.0.0.1:8025", session=session)
    [mail] = box.messages()
    assert box.kind == kind and mail.to == ("ada@example.com",) and mail.subject == "Order 1" and mail.body.strip() == "Thanks!"
    box.clear()
    assert session.deleted == [cleared]
