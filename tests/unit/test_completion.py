"""`picluster completion SHELL` and the completions a TAB gets, from the real parser."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def picluster(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PICLUSTER_", "_ARG"))}
    return subprocess.run(
        [sys.executable, "-m", "picluster_agent", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete "), ("zsh", "#compdef"), ("fish", "complete --command picluster")],
)
def test_each_shell_gets_a_script(shell, marker):
    out = picluster("completion", shell)
    assert out.returncode == 0 and marker in out.stdout, out.stderr


def test_unknown_shell_is_refused():
    out = picluster("completion", "tcsh")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "invalid choice" in out.stderr


def tab(line: str, tmp_path) -> list[str]:
    """What the shell hook gets for the cursor at the end of `line`."""
    answer = tmp_path / "answer"
    env = {
        "_ARGCOMPLETE": "1",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
    }
    out = picluster(env=env)
    assert out.returncode == 0, out.stderr
    return answer.read_text().replace("\v", " ").split()


def test_completes_subcommands_and_flags_from_the_parser(tmp_path):
    assert "submit" in tab("picluster sub", tmp_path)
    assert tab("picluster submit --after-", tmp_path) == [
        "--after-ok",
        "--after-any",
        "--after-fail",
    ]
    assert tab("picluster jobs -o ", tmp_path) == ["text", "json", "yaml", "wide"]
