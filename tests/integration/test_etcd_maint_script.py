"""roles/etcd's picluster-etcd-maint (what the backup, defrag and alarm timers run), rendered
from its template and run against a real etcd: snapshots verified and pruned, a damaged one
refused, a left-over partial one never kept, NOSPACE reported by a failing exit."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import jinja2
import pytest
from certs import TestCA

from picluster_agent.errors import NoSpace
from picluster_agent.etcd.adapter import EtcdClient
from picluster_agent.etcd.localcluster import EtcdCluster, wait_for

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "roles" / "etcd" / "templates" / "picluster-etcd-maint.j2"
KEEP = 2


@pytest.fixture
def maint(tmp_path: Path):
    """(run, etcd cluster, backup dir): the script for a 1-member etcd with a small quota."""
    cluster = EtcdCluster(tmp_path / "etcd", 1, extra_args=["--quota-backend-bytes", "600000"])
    cluster.start()
    pki = tmp_path / "pki"
    cert, key = TestCA(pki).issue("maint")
    os.rename(cert, pki / "maint.crt")
    os.rename(key, pki / "maint.key")
    ctl = tmp_path / "picluster-etcdctl"
    ctl.write_text(f'#!/bin/sh\nexec etcdctl --endpoints {cluster.endpoints_csv} "$@"\n')
    ctl.chmod(0o755)
    backups = tmp_path / "backups"
    script = tmp_path / "picluster-etcd-maint"
    script.write_text(
        jinja2.Template(TEMPLATE.read_text()).render(
            ansible_managed="test",
            etcd_backup_keep=KEEP,
            etcd_pki_dir=str(pki),
            etcd_ctl=str(ctl),
            etcd_backup_dir=str(backups),
            inventory_hostname="m0",
            etcd_bin_dir="/usr/bin",
        )
    )
    script.chmod(0o755)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *args], capture_output=True, text=True, timeout=60, check=False
        )

    yield run, cluster, backups
    cluster.stop_all()


def test_backups_are_verified_and_the_newest_kept(maint):
    run, cluster, backups = maint
    EtcdClient(cluster.endpoints).put("/picluster/queue/x", "a job")
    (backups).mkdir()
    (backups / "m0-20200101T000000Z.db.new").write_text("cut off by a power cut")
    for _ in range(KEEP + 1):
        result = run("backup")
        assert result.returncode == 0 and result.stdout.startswith("saved "), result
        # Names are by the second (UTC): the next run must not reuse this one's.
        stamp = result.stdout.split(".db:")[0][-16:-1]  # without the Z
        wait_for(lambda s=stamp: time.strftime("%Y%m%dT%H%M%S", time.gmtime()) != s, 3)
    kept = sorted(p.name for p in backups.iterdir())
    assert len(kept) == KEEP and all(n.startswith("m0-") and n.endswith(".db") for n in kept)
    verified = run("verify", str(backups / kept[-1]))
    assert verified.returncode == 0 and '"totalKey"' in verified.stdout, verified

    damaged = backups.parent / "damaged.db"
    data = bytearray((backups / kept[-1]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    refused = run("verify", str(damaged))
    assert refused.returncode == 1 and "damaged" in refused.stderr, refused
    (backups.parent / "not-a-snapshot.db").write_text("hello")
    assert run("verify", str(backups.parent / "not-a-snapshot.db")).returncode == 1


def test_alarm_check_fails_on_nospace_and_defrag_runs(maint):
    run, cluster, _ = maint
    assert run("alarms").returncode == 0
    defrag = run("defrag")
    assert defrag.returncode == 0 and "after:" in defrag.stdout, defrag
    client = EtcdClient(cluster.endpoints)

    def full() -> bool:
        try:
            client.put(f"/fill/{uuid.uuid4().hex}", b"x" * 100_000)
        except NoSpace:
            return True
        return False

    wait_for(full, 60, interval=0, what="NOSPACE")
    alarms = run("alarms")
    assert alarms.returncode == 1 and "NOSPACE" in alarms.stderr, alarms
    # A snapshot is still possible while etcd refuses writes: the time to take one.
    assert run("backup").returncode == 0
    assert run("bogus").returncode == 2
