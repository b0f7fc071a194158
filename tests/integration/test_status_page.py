"""The status page in a real browser: headless Chromium (Debian's package) opens it on a
real agent over mutual TLS with a reader's certificate, against real etcd and agents, and
reads what it shows: the master, a job going from queued to succeeded, its recorded output,
a running job's output as it is written, and a failover after `kill -9` of the master.

`PICLUSTER_SCREENSHOT=docs/status-page.png` also saves the page, with jobs in several
states, where the README shows it.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import Chromium, Page, chromium_missing

from picluster_agent.client import Client
from picluster_agent.etcd.localcluster import LEASE_TTL

from conftest import Agents

# Agents starting on a loaded machine (the suite's other tests, CI's 2 cores) can take many
# seconds to reach etcd: a start-up wait, not what the test is about.
START_UP = 60.0
# The page polls every second; etcd's answer reaches it within one poll and one rebuild of
# the shared state (api/page.py: STATE_MAX_AGE).
SHOWN_WITHIN = 3.0


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    reason = chromium_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {reason}")
        pytest.skip(reason)
    chromium = Chromium(tmp_path / "browser")
    yield chromium
    chromium.stop()
    sys.stdout.write(f"----- chromium\n{chromium.log_text()[-3000:]}\n")


def shown_master(page: Page) -> str:
    return page.evaluate("document.getElementById('master-name').textContent")


def test_status_page_in_chromium(agents: Agents, browser: Chromium) -> None:
    # Every agent serves its API: a job's live output is read on the node that runs it.
    agents.start("pg1", slots=2, with_api=True)
    assert agents.wait_leader(timeout=START_UP).name == "pg1"
    agents.start("pg2", slots=2, with_api=True)
    # The page is read from an agent that never campaigns, so that it outlives the master.
    viewer = agents.start("pg3", slots=1, master=False, with_api=True)
    agents.wait_registered(3, timeout=START_UP)
    reader = agents.apis.user("rita", "picluster-reader")
    browser.trust(
        cacert=agents.apis.pki.cacert,
        cert=reader.cert,
        key=reader.key,
        origins=[viewer.api_url],
    )
    page = browser.start().open(viewer.api_url + "/")
    # Without a certificate the page's data is refused, in one line.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            viewer.api_url + "/v1/ui/state",
            context=ssl.create_default_context(cafile=agents.apis.pki.cacert),
            timeout=10,
        )
    assert refused.value.code == 401 and "certificate" in json.load(refused.value)["error"]

    page.wait("document.getElementById('master-name').textContent === 'pg1'", 30, "pg1 shown")
    nodes = page.evaluate(
        "[...document.querySelectorAll('#nodes tr[data-node]')]"
        ".map(r => [r.dataset.node, r.dataset.role, r.dataset.lease])"
    )
    assert sorted(nodes) == [
        ["pg1", "master", "live"],
        ["pg2", "worker", "live"],
        ["pg3", "worker", "live"],
    ]

    # A job queued while every node is drained (the page says so), then run and succeeded.
    client = Client(agents.cluster.endpoints_csv, prefix=agents.prefix)
    for name in ("pg1", "pg2", "pg3"):
        client.drain(name)
    job = client.submit(["echo", "hello from the page test"]).id
    row = f"tr[data-job-id={json.dumps(job)}]"
    page.wait(f"document.querySelector('#queue {row}')?.dataset.state === 'queued'", 10,
              "the job queued")  # fmt: skip
    assert page.evaluate("document.querySelectorAll('#nodes .badge.drained').length") == 3
    for name in ("pg1", "pg2", "pg3"):
        client.undrain(name)
    page.wait(
        f"document.querySelector('#finished {row}')?.dataset.state === 'succeeded'",
        20,
        "the job succeeded",
    )
    # Its output, as recorded in etcd, once its id is clicked.
    page.evaluate(f"document.querySelector('#finished {row} td.id').click()")
    page.wait("document.getElementById('tail').textContent.includes('hello from the page test')",
              10, "the job's output")  # fmt: skip

    # A running job's output as it is written, once its id is clicked.
    ticks = "for i in $(seq 1 40); do echo tick $i; sleep 0.25; done"
    ticking = f"tr[data-job-id={json.dumps(client.submit(ticks, shell=True).id)}]"
    page.wait(f"document.querySelector('#running {ticking}')", 15, "the ticking job running")
    page.evaluate(f"document.querySelector('#running {ticking} td.id').click()")
    page.wait(
        "document.getElementById('tail').textContent.includes('tick 3')"
        f" && document.querySelector('#running {ticking}')",
        15,
        "the running job's output, live",
    )

    # kill -9 of the master: the page names the new one within seconds of etcd doing so.
    agents.by_name("pg1").kill()
    killed = time.monotonic()
    new = agents.wait_leader(timeout=LEASE_TTL + 10, other_than="pg1")
    elected = time.monotonic()
    page.wait(
        f"document.getElementById('master-name').textContent === {json.dumps(new.name)}",
        SHOWN_WITHIN,
        "the new master shown",
    )
    shown = time.monotonic()
    print(
        f"failover: elected {elected - killed:.1f}s after kill -9, "
        f"shown {shown - elected:.1f}s later"
    )
    page.wait("document.querySelector('#masters li[data-earlier-master=\"pg1\"]')", SHOWN_WITHIN,
              "pg1 among the earlier masters")  # fmt: skip
    assert shown_master(page) == new.name

    if os.environ.get("PICLUSTER_SCREENSHOT"):
        several_states(client, page)
        page.screenshot(Path(os.environ["PICLUSTER_SCREENSHOT"]))


def several_states(client: Client, page: Page) -> None:
    """Jobs running, queued, failed and succeeded, for the README's picture."""
    loop = "for i in $(seq 1 60); do echo step $i of 60; sleep 0.5; done"
    for _ in range(2):  # of the 3 slots left: one stays free for the others
        client.submit(loop, shell=True)
    client.submit(["sh", "-c", "echo cannot open input.csv >&2; exit 3"])
    client.submit(["python3", "-c", "print(sum(range(10**6)))"])
    client.submit(["make", "-C", "/srv/build", "report"], not_before=time.time() + 600)
    client.submit(["sleep", "1"], priority=5, not_before=time.time() + 90)
    page.wait("document.querySelectorAll('#running tr[data-job-id]').length >= 2", 20, "runs")
    page.wait("document.querySelectorAll('#failed tr[data-job-id]').length >= 1", 20, "fails")
    page.evaluate("document.querySelector('#running tr[data-job-id] td.id').click()")
    page.wait("document.getElementById('tail').textContent.includes('step 4 of')", 20, "live")
