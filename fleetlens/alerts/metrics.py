"""Prometheus metrics of the alerting side, as one prometheus_client collector.

`AlertMetrics` is a Collector: register it wherever metrics are served —

    from prometheus_client import REGISTRY, start_http_server
    REGISTRY.register(alerting.metrics)          # or any CollectorRegistry
    start_http_server(port)

— or serve its own registry: `start_http_server(port, registry=alerting.metrics.registry)`.
Values are read at scrape time (outbox sizes straight from the outbox).

| metric | type | labels |
|---|---|---|
| fleetlens_alerts_outbox_notifications | gauge | receiver |
| fleetlens_alerts_outbox_capacity | gauge | |
| fleetlens_alerts_notifications_enqueued_total | counter | receiver, status |
| fleetlens_alerts_notifications_delivered_total | counter | receiver |
| fleetlens_alerts_delivery_failures_total | counter | receiver, reason |
| fleetlens_alerts_notifications_dropped_total | counter | receiver, reason |
| fleetlens_alerts_last_delivery_timestamp_seconds | gauge | receiver |
| fleetlens_alerts_instances | gauge | alertname, state |
| fleetlens_alerts_evaluations_total | counter | |
| fleetlens_alerts_evaluation_seconds_total | counter | |

failure reasons: network, timeout, http_5xx, http_429, http_4xx (not retried), other;
drop reasons: outbox_full, rejected (a 4xx answer), expired (older than max_age).
"""

from __future__ import annotations

import threading
from collections import Counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry


class AlertMetrics(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._enqueued: Counter = Counter()
        self._delivered: Counter = Counter()
        self._failures: Counter = Counter()
        self._dropped: Counter = Counter()
        self._last_delivery: dict[str, float] = {}
        self._instances: Counter = Counter()
        self.evaluations = 0
        self.evaluation_seconds = 0.0
        self.outbox = None  # set by the runtime: sizes read at scrape time
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    # -- updates (any thread) --------------------------------------------------------------------
    def enqueued(self, receiver: str, status: str) -> None:
        with self._lock:
            self._enqueued[(receiver, status)] += 1

    def delivered(self, receiver: str, at: float) -> None:
        with self._lock:
            self._delivered[receiver] += 1
            self._last_delivery[receiver] = at

    def failure(self, receiver: str, reason: str) -> None:
        with self._lock:
            self._failures[(receiver, reason)] += 1

    def dropped(self, receiver: str, reason: str) -> None:
        with self._lock:
            self._dropped[(receiver, reason)] += 1

    def evaluated(self, seconds: float, instances: Counter) -> None:
        with self._lock:
            self.evaluations += 1
            self.evaluation_seconds += seconds
            self._instances = Counter(instances)

    # -- read ----------------------------------------------------------------------------------
    def value(self, name: str, **labels: str) -> float:
        """One sample's value from the exposition (tests, `alerts` CLI)."""
        for family in self.collect():
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return 0.0

    def collect(self):
        with self._lock:
            enqueued, delivered = dict(self._enqueued), dict(self._delivered)
            failures, dropped = dict(self._failures), dict(self._dropped)
            last, instances = dict(self._last_delivery), dict(self._instances)
            evaluations, seconds = self.evaluations, self.evaluation_seconds
        sizes = self.outbox.sizes() if self.outbox is not None else {}
        g = GaugeMetricFamily("fleetlens_alerts_outbox_notifications",
                              "Notifications waiting in the on-disk outbox", labels=["receiver"])
        for receiver, n in sorted(sizes.items()):
            g.add_metric([receiver], n)
        yield g
        cap = GaugeMetricFamily("fleetlens_alerts_outbox_capacity",
                                "Most notifications one receiver's outbox holds")
        if self.outbox is not None:
            cap.add_metric([], self.outbox.max_entries)
        yield cap
        c = CounterMetricFamily("fleetlens_alerts_notifications_enqueued",
                                "Notifications put in the outbox", labels=["receiver", "status"])
        for (receiver, status), n in sorted(enqueued.items()):
            c.add_metric([receiver, status], n)
        yield c
        c = CounterMetricFamily("fleetlens_alerts_notifications_delivered",
                                "Notifications a receiver accepted (2xx)", labels=["receiver"])
        for receiver, n in sorted(delivered.items()):
            c.add_metric([receiver], n)
        yield c
        c = CounterMetricFamily("fleetlens_alerts_delivery_failures",
                                "Failed delivery attempts", labels=["receiver", "reason"])
        for (receiver, reason), n in sorted(failures.items()):
            c.add_metric([receiver, reason], n)
        yield c
        c = CounterMetricFamily("fleetlens_alerts_notifications_dropped",
                                "Notifications given up on", labels=["receiver", "reason"])
        for (receiver, reason), n in sorted(dropped.items()):
            c.add_metric([receiver, reason], n)
        yield c
        g = GaugeMetricFamily("fleetlens_alerts_last_delivery_timestamp_seconds",
                              "When a receiver last accepted a notification",
                              labels=["receiver"])
        for receiver, t in sorted(last.items()):
            g.add_metric([receiver], t)
        yield g
        g = GaugeMetricFamily("fleetlens_alerts_instances", "Alert instances by state",
                              labels=["alertname", "state"])
        for (alertname, state), n in sorted(instances.items()):
            g.add_metric([alertname, state], n)
        yield g
        yield CounterMetricFamily("fleetlens_alerts_evaluations",
                                  "Rule evaluations (one per pipeline flush)", value=evaluations)
        yield CounterMetricFamily("fleetlens_alerts_evaluation_seconds",
                                  "Time spent evaluating rules and queueing notifications",
                                  value=seconds)
