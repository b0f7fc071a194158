"""Prometheus' promtool (Debian package prometheus, scripts/apt-packages.txt)."""

from __future__ import annotations

import os
import shutil

import pytest


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool not installed (Debian package prometheus, scripts/apt-packages.txt)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path
