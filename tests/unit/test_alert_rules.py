"""The monitoring role's alert rules load, and fire when they should (`promtool test rules`)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from promtool import promtool
from test_metrics import busy_metrics

RULES = (
    Path(__file__).resolve().parents[2] / "roles" / "monitoring" / "files" / "picluster-alerts.yml"
)

CASES = Path(__file__).with_name("alert_cases.yml")


def test_rules_load() -> None:
    run = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_rules_fire_when_they_should() -> None:
    run = subprocess.run(
        [promtool(), "test", "rules", str(CASES)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_rules_and_dashboard_use_only_metrics_the_agent_exports() -> None:
    exported = {
        s.name
        for family in text_string_to_metric_families(busy_metrics().exposition().decode())
        for s in family.samples
    }
    dashboard = RULES.with_name("picluster-dashboard.json").read_text()
    used = set(re.findall(r"\b(picluster_[a-z_]+)", RULES.read_text() + dashboard))
    assert used, "no picluster metric found"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    process = set(re.findall(r"\b(process_[a-z_]+)", dashboard))
    assert process <= exported
    for panel in json.loads(dashboard)["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
