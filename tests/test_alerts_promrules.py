"""The Prometheus alerting rules in dashboards/alerts: valid, unit-tested, and equivalent in
name to the built-in rules.

`promtool` comes from Debian's `prometheus` package; `make test` installs it when missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from fleetlens.alerts.metrics import AlertMetrics
from fleetlens.alerts.rules import ALERTNAMES

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "dashboards" / "alerts" / "fleetlens-rules.yml"
RULE_TESTS = ROOT / "dashboards" / "alerts" / "fleetlens-rules.test.yml"
DOC = ROOT / "docs" / "alerting.md"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus; make test "
                             "installs it)")


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True,
                          cwd=RULES.parent, timeout=120)


@needs_promtool
def test_promtool_check_rules():
    out = _promtool("check", "rules", RULES.name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 13 rules found" in out.stdout


@needs_promtool
def test_promtool_test_rules():
    out = _promtool("test", "rules", RULE_TESTS.name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def _alerts_in(path: Path) -> set[str]:
    return set(re.findall(r"^\s*- alert: (\w+)\s*$", path.read_text(), re.M))


def test_every_builtin_rule_has_a_prometheus_equivalent_with_a_unit_test():
    builtin = {name for names in ALERTNAMES.values() for name in names}
    in_rules = _alerts_in(RULES)
    assert builtin <= in_rules, builtin - in_rules
    tested = set(re.findall(r"^\s*alertname: (\w+)\s*$", RULE_TESTS.read_text(), re.M))
    assert in_rules == tested, in_rules ^ tested


def test_metric_names_in_the_rules_exist_or_are_documented():
    code = "\n".join(line.split("#", 1)[0] for line in RULES.read_text().splitlines())
    names = set(re.findall(r"\b(fleetlens_[a-z_]+)", code))
    assert len(names) == 12, sorted(names)
    ours = {n for n in names if n.startswith("fleetlens_alerts_")}
    exposition = generate_latest(AlertMetrics().registry).decode()
    for n in ours:
        assert f"# TYPE {n} " in exposition or f"# TYPE {n.removesuffix('_total')} " \
            in exposition, n
    doc = DOC.read_text()
    for n in names - ours:  # the pipeline's metrics: their assumed names are documented
        assert f"`{n}`" in doc, n
