"""The agent's own Prometheus metrics.

The counters are plain attributes, each written by one thread only (the sampling loop or the
sender thread), so counting costs nothing and needs no lock. ``prometheus_client`` is imported
only when the metrics are served (``--metrics-port`` / ``[agent] metrics_port`` not 0): a
collector in the agent's own ``CollectorRegistry`` reads the attributes, the spool and the
source's ``counters()`` at scrape time.

Names and meanings: see ``make_registry`` below and docs/agent.md. Counters are per process
(they start at 0 when the agent starts); the spool gauges include what an earlier run left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class AgentMetrics:
    ticks: int = 0
    ticks_skipped: int = 0
    tick_errors: int = 0
    samples: int = 0
    spooled: int = 0
    sent: int = 0
    dropped_spool_full: int = 0
    dropped_write_error: int = 0
    dropped_rejected: int = 0
    send_errors: int = 0
    last_send_timestamp: float = 0.0
    # Set by whoever owns the spool / the source; read at scrape time.
    spool_backlog: Callable[[], tuple[int, int]] | None = None
    source_counters: Callable[[], dict[str, int]] | None = field(default=None)

    def backlog(self) -> tuple[int, int]:
        return self.spool_backlog() if self.spool_backlog else (0, 0)

    def summary(self) -> dict[str, float]:
        messages, nbytes = self.backlog()
        return {"ticks": self.ticks, "ticks_skipped": self.ticks_skipped,
                "tick_errors": self.tick_errors, "samples": self.samples,
                "spooled": self.spooled, "sent": self.sent,
                "dropped_spool_full": self.dropped_spool_full,
                "dropped_write_error": self.dropped_write_error,
                "dropped_rejected": self.dropped_rejected, "send_errors": self.send_errors,
                "spool_messages": messages, "spool_bytes": nbytes}


def source_counters_of(source: object) -> Callable[[], dict[str, int]] | None:
    fn = getattr(source, "counters", None)
    return fn if callable(fn) else None


def make_registry(m: AgentMetrics):
    """A CollectorRegistry holding only the agent's metrics."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class _Collector:
        def collect(self):
            def counter(name: str, doc: str, value: float):
                return CounterMetricFamily(f"fleetlens_agent_{name}", doc, value=value)

            yield counter("ticks", "Sampling ticks run.", m.ticks)
            yield counter("ticks_skipped", "Ticks skipped because an earlier tick overran.",
                          m.ticks_skipped)
            yield counter("tick_errors", "Ticks whose source raised an error.", m.tick_errors)
            yield counter("samples", "GPU samples taken.", m.samples)
            yield counter("messages_spooled", "Messages appended to the on-disk spool.",
                          m.spooled)
            yield counter("messages_sent", "Messages acknowledged by Kafka.", m.sent)
            dropped = CounterMetricFamily("fleetlens_agent_messages_dropped",
                                          "Messages lost before reaching Kafka, by reason.",
                                          labels=["reason"])
            dropped.add_metric(["spool_full"], m.dropped_spool_full)
            dropped.add_metric(["write_error"], m.dropped_write_error)
            dropped.add_metric(["rejected"], m.dropped_rejected)
            yield dropped
            yield counter("send_errors", "Failed Kafka connects and sends (retried).",
                          m.send_errors)
            messages, nbytes = m.backlog()
            yield GaugeMetricFamily("fleetlens_agent_spool_messages",
                                    "Messages in the spool not yet acknowledged by Kafka.",
                                    value=messages)
            yield GaugeMetricFamily("fleetlens_agent_spool_bytes",
                                    "Bytes of the messages in the spool.", value=nbytes)
            yield GaugeMetricFamily("fleetlens_agent_last_send_timestamp_seconds",
                                    "Unix time of the last Kafka acknowledgement (0: none).",
                                    value=m.last_send_timestamp)
            src = CounterMetricFamily("fleetlens_agent_source_errors",
                                      "Error counters reported by the sample source.",
                                      labels=["kind"])
            if m.source_counters is not None:
                try:
                    for kind, value in sorted(m.source_counters().items()):
                        src.add_metric([str(kind)], float(value))
                except Exception:  # a broken source must not break the scrape
                    log.exception("source counters() failed")
            yield src

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return registry


def serve(m: AgentMetrics, port: int, addr: str = "0.0.0.0"):
    """Serve the metrics on http://addr:port/metrics; returns (server, thread)."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=addr, registry=make_registry(m))
