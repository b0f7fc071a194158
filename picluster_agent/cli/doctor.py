"""`picluster doctor`: one line per check, the worst one decides the exit code.

Exit codes (its own, for scripts): 0 every check ok, 1 some warn, 2 some fail. Bad input
is 2 as everywhere, with one line on stderr and no check run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..client import Client
from ..config import from_flags
from ..doctor import checks
from ..doctor.card import card_check
from ..doctor.result import Check, worst
from . import argtypes
from .output import emit_json

# The etcd role's config file: the quota is read from it on an etcd member.
ETCD_CONFIG = Path("/etc/etcd/etcd.conf.yml")
# etcd's own default quota, and the etcd role's (etcd_quota_backend_bytes).
DEFAULT_QUOTA = 2 * 2**30

EPILOG = """checks: etcd-health, etcd-alarms, etcd-members, etcd-db-size, clock, certificates,
master, nodes, card (this machine's storage: only on a node).
exit codes: 0 every check ok, 1 a warning, 2 a failure (or bad input: nothing checked)."""


def quota_from_config(path: Path = ETCD_CONFIG) -> int | None:
    """quota-backend-bytes of the local member's config, when this is a member and may read it."""
    try:
        value = yaml.safe_load(path.read_text()).get("quota-backend-bytes")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def run_checks(client: Client, quota: int) -> list[Check]:
    s = checks.survey(client)
    found = [checks.health_check(s)]
    if s.unreachable is None:
        found += [
            checks.alarms_check(client),
            checks.members_check(s),
            checks.db_size_check(s, quota),
            checks.clock_check(s),
        ]
    found.append(checks.certificates_check(client, s))
    if s.unreachable is None:
        found += [checks.master_check(client), checks.nodes_check(client)]
    found.append(card_check())  # this machine's own storage, when it is a node
    return found


def cmd_doctor(args: argparse.Namespace) -> int:
    _, conn = from_flags(args)
    quota = args.quota_bytes or quota_from_config() or DEFAULT_QUOTA
    client = Client.from_connection(conn)
    try:
        found = run_checks(client, quota)
    finally:
        client.close()
    level = worst(found)
    if args.output == "json":
        emit_json({"status": level.word, "checks": [c.to_dict() for c in found]})
    else:
        width = max(len(c.name) for c in found)
        for c in found:
            sys.stdout.write(f"{c.level.word:<5} {c.name:<{width}}  {c.summary}\n")
    return int(level)


def add_parser(
    sub: Any,
    connection_options: Callable[[argparse.ArgumentParser], None],
    output_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser(
        "doctor",
        help="check the cluster: etcd, clocks, certificates, master, nodes, this card",
        description="One line per check (ok, warn, fail); run on a node or a laptop.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    connection_options(p)
    output_option(p)
    p.add_argument(
        "--quota-bytes",
        type=argtypes.integer(1, 2**40),
        metavar="BYTES",
        help="etcd's quota-backend-bytes (default: the local member's config, else "
        f"{DEFAULT_QUOTA} as the etcd role sets it)",
    )
    p.set_defaults(func=cmd_doctor)
