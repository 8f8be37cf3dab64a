"""The dashboard's live feed: bounded per listener, in items and in the bytes of each item."""

from __future__ import annotations

from broker.activity import MAX_TEXT, ActivityFeed


def test_a_slow_listener_loses_its_oldest_items_and_long_texts_are_cut():
    feed = ActivityFeed(queue_size=3)
    q = feed.listen()
    for n in range(5):
        feed.publish("event", {"n": n, "subject": "s" * 100_000, "subscriptions": [f"sub{i}" for i in range(1000)]})
    items = [q.get_nowait() for _ in range(q.qsize())]
    assert [i["n"] for i in items] == [2, 3, 4]
    assert all(len(i["subject"]) <= MAX_TEXT + 1 and len(i["subscriptions"]) == 64 for i in items)
    feed.unlisten(q)
    assert not feed.has_listeners
