"""Engine.accept_soon: publishes served on the delivery loop, stored without waiting there."""

from __future__ import annotations

import concurrent.futures
import queue

from broker.events import Event


def on_loop(engine, fn):
    """Run fn() on the engine's delivery loop thread; return its result."""
    done: concurrent.futures.Future = concurrent.futures.Future()

    def call():
        try:
            done.set_result(fn())
        except BaseException as exc:  # handed to the test thread
            done.set_exception(exc)

    engine.client.loop.call_soon_threadsafe(call)
    return done.result(5)


def event(event_id: str) -> Event:
    return Event(id=event_id, type="NewOrder", time="2026-01-01T00:00:00Z", data={"n": event_id})


def stored_ids(engine) -> list[str]:
    return [r["event_id"] for r in engine.store.read("SELECT event_id FROM events ORDER BY seq")]


def test_publishes_accepted_in_one_pass_of_the_loop_share_one_commit(engine, monkeypatch):
    groups = []
    run_group = engine.store.commits._run_group
    monkeypatch.setattr(engine.store.commits, "_run_group", lambda db, jobs: groups.append(len(jobs)) or run_group(db, jobs))
    topic = engine.registry.topic("default")
    answers: queue.Queue = queue.Queue()

    def two_publishes():
        engine.accept_soon(topic, [event("a")], answers.put)
        engine.accept_soon(topic, [event("b"), event("c")], answers.put)

    on_loop(engine, two_publishes)
    assert [answers.get(timeout=5), answers.get(timeout=5)] == [None, None]
    assert groups == [2]  # one transaction, one commit
    assert stored_ids(engine) == ["a", "b", "c"]


def test_a_publish_on_the_loop_does_not_wait_while_another_write_holds_the_store(engine):
    topic = engine.registry.topic("default")
    answers: queue.Queue = queue.Queue()
    engine.store.commits._write_lock.acquire()  # as the writer thread or the checkpointer may
    try:
        on_loop(engine, lambda: engine.accept_soon(topic, [event("late")], answers.put))  # returns at once
        on_loop(engine, lambda: None)  # the pass that would commit it has run, too
        assert answers.empty() and stored_ids(engine) == []
    finally:
        engine.store.commits._write_lock.release()
    assert answers.get(timeout=5) is None  # committed by the writer thread, answered on the loop
    assert stored_ids(engine) == ["late"]


def test_routing_while_subscriptions_come_and_go_never_sees_a_collection_change_under_it(engine, client):
    import threading
    import time

    from broker.engine import _Batch
    from broker.events import Event

    body = {"properties": {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": "http://x.test/e", "skipValidation": True}},
                           "filter": {"includedEventTypes": ["T"]}}}
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn():
        app = client.application
        with app.app_context():
            n = 0
            while not stop.is_set():
                c = app.test_client()
                c.put(f"/topics/default/eventSubscriptions/flap-{n % 5}", json=body)
                c.delete(f"/topics/default/eventSubscriptions/flap-{(n + 2) % 5}")
                n += 1

    worker = threading.Thread(target=churn)
    worker.start()
    events = [Event(id=f"e{i}", type="T", time="2026-01-01T00:00:00Z", subject="s", data={}) for i in range(20)]
    deadline, batches = time.monotonic() + 1.5, 0
    try:
        while time.monotonic() < deadline:
            try:
                _Batch(engine, engine.registry.topic("default"), events)
                batches += 1
            except Exception as exc:  # "dictionary changed size during iteration", with mutable collections
                errors.append(exc)
                break
    finally:
        stop.set()
        worker.join(10)
    assert not errors and batches > 10


def test_a_topic_created_with_keys_while_an_anonymous_publish_is_checked_refuses_that_publish(engine, client, monkeypatch):
    real = engine.topic_for_publish

    def created_meanwhile(name):
        client.put(f"/topics/{name}", json={"properties": {"keys": ["secret-key"]}})  # someone else, just now
        return real(name)

    monkeypatch.setattr(engine, "topic_for_publish", created_meanwhile)
    events = [{"id": "e1", "eventType": "T", "subject": "s", "eventTime": "2026-01-01T00:00:00Z", "data": {}}]
    resp = client.post("/topics/racy/api/events", json=events)
    assert resp.status_code == 401
    assert engine.store.deliveries.event_count() == 0  # not stored against the keyed topic, nor a stand-in
