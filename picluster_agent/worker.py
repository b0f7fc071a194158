"""The worker side of an agent (jobs: see the jobs issue)."""

from __future__ import annotations

from .agent import WorkerDuty
from .config import AgentConfig


def worker_duty_factory(cfg: AgentConfig) -> WorkerDuty | None:
    return None
