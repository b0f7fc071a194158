"""Many jobs in one submission (issue 13, finding 7): chunks sized in bytes, and a partial
failure that says exactly which jobs were accepted."""

from __future__ import annotations

import json
from pathlib import Path

from picluster_agent.cli.jobs import EXIT_PARTIAL
from picluster_agent.client import Client
from picluster_agent.etcd.localcluster import EtcdCluster
from picluster_agent.jobs.spec import build_spec


def test_chunks_are_sized_in_bytes_not_characters(etcd1: EtcdCluster, prefix: str) -> None:
    # 64 specs of ~10,000 characters each but three bytes per character: counted as
    # characters they make one 1.9 MB txn, which etcd refuses (its limit is 1.5 MiB).
    client = Client(etcd1.endpoints_csv, prefix=prefix)
    specs = [build_spec(["true"], env={"TEXT": "€" * 10_000}) for _ in range(64)]
    results = client.submit_many(specs)
    assert len(results) == 64 and all(r.accepted for r in results)
    assert client.etcd.count_prefix(client.keys.queue_dir) == 64


def test_a_partial_submission_prints_every_committed_id_and_a_distinct_code(
    tmp_path: Path, prefix: str, cli
) -> None:
    # An etcd that takes smaller requests than etcd's default: the first chunk (64 small
    # specs) commits, the second (large specs) is refused.
    cluster = EtcdCluster(tmp_path / "etcd", 1, extra_args=["--max-request-bytes", "300000"])
    cluster.start()
    try:
        lines = [json.dumps({"id": f"small-{i}", "command": ["true"]}) for i in range(64)]
        lines += [
            json.dumps({"id": f"big-{i}", "command": ["true"], "env": {"X": "x" * 100_000}})
            for i in range(4)
        ]
        specs = tmp_path / "jobs.jsonl"
        specs.write_text("\n".join(lines) + "\n")
        out = cli(
            "submit", "--endpoints", cluster.endpoints_csv, "--prefix", prefix,
            "--file", str(specs),
        )  # fmt: skip
        assert out.returncode == EXIT_PARTIAL, (out.returncode, out.stderr)
        assert out.stdout.split() == [f"small-{i}" for i in range(64)]
        assert "64 of 68" in out.stderr
        client = cluster.client()
        queued = {kv.key.rsplit("/", 1)[1] for kv in client.get_prefix(f"{prefix}/queue/")[0]}
        assert queued == {f"small-{i}" for i in range(64)}
    finally:
        cluster.stop_all()
