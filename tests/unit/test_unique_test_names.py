"""pytest's default import mode needs every test module's name to be unique across the
suite's folders (they have no __init__.py): a second `test_x.py` stops the whole run at
collection, which a run of one folder alone never shows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_name_is_unique() -> None:
    names = Counter(
        p.name for p in TESTS.rglob("test_*.py") if not (p.parent / "__init__.py").exists()
    )
    assert [name for name, n in names.items() if n > 1] == []
