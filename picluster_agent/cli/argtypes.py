"""The command line's boundary: a parser whose errors are one line, and argument types.

Each type checks one value while the arguments are parsed, before any command runs, so a
bad value is refused (one line on stderr, exit 2) before anything reaches etcd. The agent's
settings use the very checks of the config file (`config.SETTINGS`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn

from ..config import SETTINGS, parse_labels
from ..endpoints import parse_endpoints
from ..errors import ConfigError
from ..etcd.keys import validate_job_id, validate_node_name
from ..jobs.arrays import parse_array
from ..jobs.spec import SpecError, parse_duration

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a refusal is one line: argparse's own usage block would bury the
    reason, and scripts reading stderr expect a single line."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("picluster").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_USAGE, f"picluster: {where}{message} (see {self.prog} --help)\n")


def _type(name: str, check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a check that raises ConfigError or ValueError."""

    def parse(text: str) -> Any:
        try:
            return check(text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None

    parse.__name__ = name
    return parse


def _text(text: str) -> str:
    if not text.strip():
        raise ConfigError(f"must not be empty, got {text!r}")
    if not text.isprintable():
        raise ConfigError(f"must be printable text on one line, got {text!r}")
    return text


def _nonempty(text: str) -> str:
    if not text:
        raise ConfigError("must not be empty")
    return text


def _int(text: str, minimum: int | None, maximum: int | None) -> int:
    n = int(text)
    if minimum is not None and n < minimum:
        raise ConfigError(f"must be at least {minimum}, got {n}")
    if maximum is not None and n > maximum:
        raise ConfigError(f"must be at most {maximum}, got {n}")
    return n


def _duration(text: str) -> float:
    try:
        return parse_duration(_text(text))
    except SpecError as e:
        raise ConfigError(e.reason) from None


def setting(name: str, convert: Callable[[str], Any] = str) -> Callable[[str], Any]:
    """A flag for config setting `name`: its text converted, then the config file's check."""
    kind = "an integer" if convert is int else "a value"
    return _type(kind, lambda text: SETTINGS[name](convert(_text(text))))


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An integer; bounds here only for what nothing further on checks (spec fields are
    checked, with their own messages, when the spec is built)."""
    return _type("an integer", lambda text: _int(text, minimum, maximum))


text = _type("text", _text)
# Where a later check owns the rules (an environment value may hold tabs or newlines).
nonempty = _type("text", _nonempty)
node_name = _type("a node name", lambda t: validate_node_name(t))
job_id = _type("a job id", lambda t: validate_job_id(t))
array_range = _type("an array range", lambda t: parse_array(t))
job_ids = _type("job ids", lambda t: [validate_job_id(i) for i in t.split(",")])
label = _type("KEY=VALUE", lambda t: parse_labels([t]) and t)
endpoints = _type("endpoints", lambda t: parse_endpoints(t) and t)
duration = _type("a duration", _duration)
