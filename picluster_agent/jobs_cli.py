"""Job subcommands (submit, status, jobs, logs, wait, cancel, drain)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def add_parsers(
    sub: Any, connection_options: Callable[..., None], output_option: Callable[..., None]
) -> None:
    return None
