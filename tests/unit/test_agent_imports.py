"""What an agent imports at start: modules only some agents use are imported on first use.

Each module an idle agent loads stays resident for the agent's life (issue 18's goal: an
idle agent within 40 MB; docs/BENCHMARKS.md says where its memory goes). croniter (with
dateutil and ctypes) serves periodic jobs only; python-ulid (with importlib.metadata) makes
job ids, which an agent makes only for periodic jobs or API submissions.
"""

from __future__ import annotations

import subprocess
import sys

# The modules `picluster agent` imports before it serves (cli/app.py cmd_agent).
AGENT_MODULES = [
    "picluster_agent.cli.app",
    "picluster_agent.duties.agent",
    "picluster_agent.duties.periodic",
    "picluster_agent.duties.scheduler",
    "picluster_agent.duties.worker",
    "picluster_agent.observe.journal",
    "picluster_agent.observe.metrics",
    "picluster_agent.api.server",
]
LAZY = ["croniter", "dateutil", "ulid", "ctypes", "importlib.metadata"]


def test_an_agent_starts_without_the_modules_it_uses_on_demand() -> None:
    probe = (
        f"import sys\nfor m in {AGENT_MODULES!r}: __import__(m)\n"
        f"print(' '.join(m for m in {LAZY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == []


def test_the_lazy_modules_load_when_used() -> None:
    from picluster_agent.jobs import ids, periodic

    assert len(ids.new_job_id()) == 26
    assert periodic._croniter().is_valid("*/5 * * * *")
