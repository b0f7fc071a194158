"""Packaging: the license in the form setuptools keeps accepting, and the distribution's name
(ours, not PyPI's `picluster`) wherever it is used."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from picluster_agent.cli import app, provision

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_license_is_an_spdx_expression_with_its_file():
    # The `{ text = ... }` table is deprecated: setuptools fails such builds after 2027-02-18.
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_build_backend_understands_the_spdx_license():
    # setuptools reads `license = "..."` and `license-files` from 77 on (PEP 639).
    (setuptools,) = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    minimum = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", setuptools)
    assert minimum and int(minimum.group(1)) >= 77


def wheel_name() -> str:
    """The distribution's name as it appears in its wheel's file name (PEP 427, PEP 503)."""
    return re.sub(r"[-_.]+", "_", PYPROJECT["project"]["name"]).lower()


def test_distribution_name_is_not_the_pypi_picluster():
    # `picluster` on PyPI is another project: an install hint naming it installs that one.
    assert PYPROJECT["project"]["name"] == "picluster-agent"
    assert PYPROJECT["project"]["scripts"] == {"picluster": "picluster_agent.cli:main"}


def test_agent_role_finds_the_wheel_by_its_file_name():
    # The role picks our wheel out of the wheelhouse by name to learn the version.
    wheels = (REPO / "roles/picluster_agent/tasks/wheels.yml").read_text()
    assert f"select('match', '{wheel_name()}-[^-]+-')" in wheels
    assert f"regex_replace', '^{wheel_name()}-', '')" in wheels


def test_provision_hint_names_the_right_distribution(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ansible_runner", None)  # the import fails
    assert app.main(["provision"]) == provision.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "picluster-agent" in err and "'.[provision]'" in err
    assert "picluster[" not in err
