"""Prometheus metrics, on a registry owned by the app (never prometheus_client's global one).

Counters move on the publish and delivery paths; gauges that describe the store (pending
deliveries, dead letters, size) are read from SQLite when /metrics is scraped.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from .resources import DOMAIN, TOPIC

UNKNOWN_TOPIC = "(unknown)"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self, engine) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.accepted = Counter(
            "eventgrid_events_accepted", "Events accepted and stored, per topic.", ["topic"], registry=self.registry
        )
        self.rejected = Counter(
            "eventgrid_events_rejected", "Publish requests rejected, per topic and reason (error code).",
            ["topic", "reason"], registry=self.registry,
        )
        self.deliveries = Counter(
            "eventgrid_delivery_attempts", "Delivery attempts per subscription and outcome (one per event).",
            ["topic", "subscription", "outcome"], registry=self.registry,
        )
        self.latency = Histogram(
            "eventgrid_delivery_latency_seconds", "Time from sending a delivery request to the subscriber's answer.",
            ["topic", "subscription"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.registry.register(_StoreCollector(engine))
        self.engine = engine
        self._children: dict = {}

    def topic_label(self, name: str) -> str:
        """The `topic` label of a refused publish: its name if it exists, else one shared value, so
        that publishes to made-up names cannot add a series each."""
        registry = self.engine.registry
        if registry.get(TOPIC, name) is not None or registry.get(DOMAIN, name) is not None:
            return name
        return UNKNOWN_TOPIC

    def child(self, metric, *labels):
        """`metric.labels(*labels)`, kept: labels() takes a lock and builds its key on every call,
        which showed up in profiles of the publish and delivery paths."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StoreCollector:
    """Gauges read from the store at scrape time, one series per live event subscription."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def describe(self):
        return []

    def collect(self):
        store, registry = self.engine.store, self.engine.registry
        pending = GaugeMetricFamily("eventgrid_deliveries_pending", "Deliveries waiting for an attempt (incl. in flight).", labels=["topic", "subscription"])
        dead = GaugeMetricFamily("eventgrid_dead_letters", "Dead-lettered deliveries kept in the store.", labels=["topic", "subscription"])
        counts = store.deliveries.counts()
        for sub in registry.subscriptions():
            found = counts.get(sub.id, {})
            pending.add_metric([sub.scope.label, sub.name], found.get("pending", 0) + found.get("inflight", 0))
            dead.add_metric([sub.scope.label, sub.name], found.get("deadlettered", 0))
        yield pending
        yield dead
        yield GaugeMetricFamily("eventgrid_store_events", "Events held in the store.", value=store.deliveries.event_count())
        yield GaugeMetricFamily("eventgrid_store_size_bytes", "Size of the SQLite store on disk (db + WAL).", value=store.size_bytes())
