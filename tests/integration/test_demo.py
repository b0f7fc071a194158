"""The README's first command: `picluster demo` runs a whole cluster and tells the story."""

from __future__ import annotations

import re
from pathlib import Path


def test_demo_runs_end_to_end(cli):
    out = cli("demo", "--jobs", "60", timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "kill -9 of the master" in text
    assert "HTTPS API" in text and ": succeeded on pi" in text
    assert "every accepted job completed" in text
    assert "is a worker" in text and "took over after" in text
    # Its working directory (~190 MB of etcd WAL) is removed after a run that succeeded.
    found = re.search(r"working directory: (\S+)", text)
    assert found, text[:500]
    assert not Path(found[1]).exists()
