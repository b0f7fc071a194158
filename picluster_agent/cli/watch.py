"""`--watch` for jobs, nodes and status: show again whenever etcd says something changed.

One prefix watch on the keys the view is made of wakes the loop; changes are gathered for
at least MIN_INTERVAL, so a busy cluster is shown a few times a second, not per event. Text
is redrawn in place on a terminal (else each view follows the last after a blank line);
`-o json` prints one compact document per line (JSON Lines), `-o yaml` one `---` document
per view. Ctrl-C ends a watch with exit 0; `until` ends it (`status` of a finished job).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import threading
from collections.abc import Callable, Sequence

from ..client import Client

MIN_INTERVAL = 0.5  # seconds between two views
_CLEAR = "\x1b[H\x1b[2J"


def watch(
    client: Client,
    prefixes: Sequence[str],
    fmt: str,
    show: Callable[[], int],
    until: Callable[[], bool] | None = None,
) -> int:
    """Run `show` (prints one view, returns an exit code) now and after every change under
    `prefixes`, until `until()` is true after a view, or Ctrl-C."""
    changed = threading.Event()
    _, rev = client.etcd.get_prefix(client.keys.prefix + "/", keys_only=True, limit=1)
    watches = [
        client.etcd.watch(
            prefix,
            lambda _events, _rev: changed.set(),
            start_revision=rev + 1,
            name="cli-watch",
            on_compacted=lambda _e: changed.set(),
        )
        for prefix in prefixes
    ]
    last: str | None = None
    try:
        while True:
            code, last = _view(show, fmt, last)
            if until is not None and until():
                return code
            changed.wait()
            changed.clear()
            threading.Event().wait(MIN_INTERVAL)  # let a burst of changes gather
    except KeyboardInterrupt:
        return 0
    finally:
        for w in watches:
            w.stop()


def watch_option(p: argparse.ArgumentParser, how_long: str) -> None:
    p.add_argument(
        "-w", "--watch", action="store_true", help=f"show again on every change, {how_long}"
    )


def _view(show: Callable[[], int], fmt: str, last: str | None) -> tuple[int, str]:
    """Show a view unless it is the one shown last (a change that shows nothing new, such
    as a node's registration renewed); returns the exit code and the view."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = show()
    view = text = buffer.getvalue()
    if view == last:
        return code, view
    if fmt == "json":
        text = json.dumps(json.loads(text), sort_keys=True, default=str) + "\n"
    elif fmt in ("text", "wide"):
        if sys.stdout.isatty():
            text = _CLEAR + text
        elif last is not None:
            text = "\n" + text
    sys.stdout.write(text)
    sys.stdout.flush()
    return code, view
