"""The status page's static files: shipped in the wheel, self-contained, and never turning a
value read from etcd into markup."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "picluster_agent" / "ui" / "static"


def test_every_static_file_is_package_data():
    # A file the patterns miss is in the checkout (editable installs work) but not in the
    # wheel the Pis install: the page would be broken only there.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["picluster_agent.ui"]
    files = [p.relative_to(STATIC.parent).as_posix() for p in STATIC.iterdir()]
    assert files
    missed = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not missed


def test_the_page_loads_only_its_own_files():
    html = (STATIC / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(r.startswith("/ui/") for r in refs)
    assert all((STATIC / r.removeprefix("/ui/")).is_file() for r in refs)
    # No inline script: the server's Content-Security-Policy allows only 'self'.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)


def test_script_puts_text_in_as_text():
    # Job commands, node names and labels come from keys anyone with write access can put.
    js = (STATIC / "page.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, sink
