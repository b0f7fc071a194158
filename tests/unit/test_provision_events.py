"""The event -> per-host state logic of `picluster provision` (no Ansible run)."""

from __future__ import annotations

import argparse

import pytest

from picluster_agent.cli.provision import RunState, add_parser, build_cmdline


def ev(kind: str, **data: object) -> dict[str, object]:
    return {"event": kind, "event_data": data}


def test_counts_per_host_and_current_task() -> None:
    s = RunState()
    s.handle(ev("playbook_on_play_start", play="Base OS"))
    s.handle(ev("playbook_on_task_start", task="Install the base packages"))
    s.handle(ev("runner_on_start", host="pi1", task="Install the base packages"))
    s.handle(ev("runner_on_start", host="pi2", task="Install the base packages"))
    assert s.play == "Base OS"
    assert s.hosts["pi1"].task == "Install the base packages"
    s.handle(ev("runner_on_ok", host="pi1", task="Install", res={"changed": True}))
    s.handle(ev("runner_on_ok", host="pi2", task="Install", res={"changed": False}))
    s.handle(ev("runner_on_skipped", host="pi2", task="Reboot"))
    assert (s.hosts["pi1"].ok, s.hosts["pi1"].changed) == (0, 1)
    assert (s.hosts["pi2"].ok, s.hosts["pi2"].changed, s.hosts["pi2"].skipped) == (1, 0, 1)
    assert s.failures() == []


@pytest.mark.parametrize(
    ("event", "status"),
    [
        (
            ev("runner_on_failed", host="pi3", task="Start etcd", res={"msg": "boom\nmore"}),
            "failed",
        ),
        (
            ev(
                "runner_on_unreachable", host="pi3", task="Gathering Facts", res={"msg": "no route"}
            ),
            "unreachable",
        ),
    ],
)
def test_failure_names_host_and_task(event: dict[str, object], status: str) -> None:
    s = RunState()
    s.handle(event)
    host, task, message = s.failures()[0]
    assert host == "pi3"
    assert task == event["event_data"]["task"]  # type: ignore[index]
    assert message in ("boom / more", "no route")  # up to 3 lines, joined
    assert s.hosts["pi3"].status == status


def test_first_failure_is_kept_and_ignored_errors_do_not_count() -> None:
    s = RunState()
    s.handle(ev("runner_on_failed", host="pi1", task="Probe", ignore_errors=True, res={}))
    assert s.failures() == [] and s.hosts["pi1"].ok == 1
    s.handle(ev("runner_on_failed", host="pi1", task="First", res={"msg": "a"}))
    s.handle(ev("runner_on_failed", host="pi1", task="Second", res={"msg": "b"}))
    assert s.failures() == [("pi1", "First", "a")]
    assert s.hosts["pi1"].failed == 2


def test_stats_end_the_run_and_clear_tasks() -> None:
    s = RunState()
    s.handle(ev("runner_on_start", host="pi1", task="Wait"))
    s.handle(ev("playbook_on_stats", ok={"pi1": 3}, changed={}, failures={}, dark={}))
    assert s.finished and s.hosts["pi1"].task == ""


def test_unknown_and_hostless_events_are_ignored() -> None:
    s = RunState()
    s.handle({"event": "verbose", "stdout": "x"})
    s.handle(ev("runner_on_ok", res={"changed": True}))
    assert s.hosts == {}


def test_parser_and_cmdline() -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "provision",
            "playbooks/upgrade.yml",
            "-l",
            "pi1",
            "-e",
            "a=1",
            "-e",
            '{"b": 2}',
            "--check",
        ]
    )
    assert args.playbook == "playbooks/upgrade.yml" and args.limit == "pi1"
    assert build_cmdline(args) == ["-e", "a=1", "-e", '{"b": 2}', "--check"]
    assert parser.parse_args(["provision"]).playbook == "site.yml"
