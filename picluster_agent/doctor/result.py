"""A check's outcome, and how outcomes add up to the command's exit code."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Level(enum.IntEnum):
    """Ordered so that the worst of several is their max; the value is the exit code."""

    OK = 0
    WARN = 1
    FAIL = 2

    @property
    def word(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    summary: str  # one line for people
    details: dict[str, Any] = field(default_factory=dict)  # for -o json

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.level.word,
            "summary": self.summary,
            "details": self.details,
        }


def worst(checks: list[Check]) -> Level:
    return max((c.level for c in checks), default=Level.OK)
