"""The short form of the fault suite: about two minutes of every fault kind, from a fixed seed,
with the production timing (NetCluster's defaults), then the whole history checked.

Before the job supervisor held a lease fence (issue 13, finding 1), seed 13's agent_pause
left a job running on the paused node while its re-run started elsewhere.

Reproduce it (and see the faults it injects) with:
    .venv/bin/python bench/chaos.py --seed 13 --jobs 100 --minutes 1.6 --every-kind --agent-nodes 1
"""

from __future__ import annotations

import pytest

from picluster_agent.chaos.schedule import FAULT_KINDS, chaos_run

pytestmark = pytest.mark.faults
SEED = 13


@pytest.mark.timeout(480)
def test_every_fault_kind_in_turn_keeps_every_promise(net_cluster, tmp_path):
    cluster = net_cluster(etcd_nodes=3, agent_nodes=1, slots=2)
    result = chaos_run(cluster, seed=SEED, jobs=100, seconds=96, every_kind=True, work_dir=tmp_path)
    print(result.table())
    assert set(result.faults_by_kind()) == set(FAULT_KINDS)
    assert result.unfinished == 0
    assert result.verdict.ok, [f"{v.kind}: {v.job} {v.detail}" for v in result.verdict.violations]
