"""Alerting on the stream: rules -> alert state -> outbox -> receivers (docs/alerting.md).

    alerting = Alerting.from_file("alerts.toml", store_dir)
    alerting.attach(job)      # rollup observer + flush hook on a PipelineJob
    alerting.start()          # delivery threads
    ...
    alerting.stop()           # send what group_interval held back, save the state,
                              # give receivers shutdown_drain seconds, stop

`alerting.metrics` is a prometheus_client Collector (see fleetlens.alerts.metrics).
"""

from __future__ import annotations

import time
from pathlib import Path

from fleetlens.alerts.config import AlertsConfig, load
from fleetlens.alerts.deliver import Deliverer
from fleetlens.alerts.evaluate import Evaluator, StateLock
from fleetlens.alerts.metrics import AlertMetrics
from fleetlens.alerts.outbox import Outbox

__all__ = ["Alerting", "AlertsConfig", "load"]


class Alerting:
    def __init__(self, cfg: AlertsConfig, store_dir: str | Path, clock=time.time):
        self.cfg = cfg
        self.state_dir = Path(cfg.state_dir) if cfg.state_dir else Path(store_dir) / "alerts"
        self.lock = StateLock(self.state_dir)
        try:
            self.metrics = AlertMetrics()
            self.outbox = Outbox(self.state_dir / "outbox", cfg.outbox_max, self.metrics)
            self.metrics.outbox = self.outbox
            self.evaluator = Evaluator(cfg, self.state_dir, self.outbox.enqueue, self.metrics,
                                       clock)
            self.deliverer = Deliverer(cfg, self.outbox, self.metrics)
        except BaseException:
            self.lock.release()
            raise

    @classmethod
    def from_file(cls, path: str | Path, store_dir: str | Path) -> Alerting:
        return cls(load(path), store_dir)

    def attach(self, job) -> None:
        self.evaluator.attach(job)

    def start(self) -> None:
        self.deliverer.start()

    def stop(self) -> None:
        try:
            self.evaluator.final()
            self.deliverer.stop(self.cfg.shutdown_drain)
        finally:
            self.lock.release()
