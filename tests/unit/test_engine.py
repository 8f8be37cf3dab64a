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
