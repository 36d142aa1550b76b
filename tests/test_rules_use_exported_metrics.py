"""The Prometheus alerting rules we ship only name metrics that the code exports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from fleetlens.collectors.agent_metrics import AgentMetrics, make_registry
from fleetlens.pipeline.metrics import PipelineMetrics

from fleetlens.alerts.metrics import AlertMetrics

RULES = Path(__file__).resolve().parents[1] / "dashboards" / "alerts" / "fleetlens-rules.yml"


def exported() -> set[str]:
    pipeline = PipelineMetrics()
    pipeline.registry.register(AlertMetrics())
    names = set()
    for registry in (pipeline.registry, make_registry(AgentMetrics())):
        for family in registry.collect():
            names |= {s.name for s in family.samples} | {family.name}
    return names


def test_every_metric_in_the_alert_rules_is_exported():
    rules = yaml.safe_load(RULES.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in re.findall(r"\b(fleetlens_[a-z_]+)\b", e)}
    assert used, "no fleetlens metric found in the rules"
    have = exported()
    # A labelled counter has no sample before its first label set; its family name then
    # stands for the `_total` series.
    missing = sorted(m for m in used if m not in have and m.removesuffix("_total") not in have)
    assert missing == []
