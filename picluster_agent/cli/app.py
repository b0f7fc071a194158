"""The `picluster` command: one function per subcommand, shared options in one place.

Exit codes (also in `picluster --help` and the README):
  0  success
  1  other failure
  2  bad input or configuration (nothing was changed)
  3  cluster unreachable (no etcd endpoint answered), or refusing writes for now
     (out of space: NOSPACE; overloaded): nothing was accepted
  4  not found (unknown job id or node)
"""

from __future__ import annotations

import _thread
import argparse
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from .. import __version__, defaults
from ..client import Client
from ..config import LOG_LEVELS, Connection, build_agent_config, ensure_data_dir, from_flags
from ..errors import ConfigError, NoSpace, NotFound, PiclusterError, TooManyRequests, Unavailable
from . import argtypes, completion, output
from .argtypes import Parser
from .output import emit, error, warn_alarms
from .watch import watch, watch_option

EXIT_CODES = """exit codes:
  0  success
  1  other failure
  2  bad input or configuration (nothing was changed)
  3  cluster unreachable (no etcd endpoint answered), or refusing writes for now
     (out of space: NOSPACE; overloaded): nothing was accepted
  4  not found (unknown job id or node)
"""

Handler = Callable[[argparse.Namespace], int]

# The demo runs every agent on this machine.
DEMO_MAX_AGENTS = 16
DEMO_MAX_JOBS = 100_000


# ---------------------------------------------------------------- shared options


def _connection_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection (flags > environment > config file)")
    g.add_argument(
        "--config",
        type=argtypes.text,
        help=f"YAML config file (default: {defaults.USER_CONFIG_FILE} or {defaults.CONFIG_FILE})",
    )
    g.add_argument(
        "--endpoints",
        type=argtypes.endpoints,
        help="etcd endpoints, comma-separated [PICLUSTER_ENDPOINTS]",
    )
    g.add_argument(
        "--prefix",
        type=argtypes.setting("prefix"),
        help=f"etcd key prefix (default {defaults.PREFIX}) [PICLUSTER_PREFIX]",
    )
    g.add_argument(
        "--cacert", type=argtypes.text, help="CA certificate for etcd TLS [PICLUSTER_CACERT]"
    )
    g.add_argument("--cert", type=argtypes.text, help="client certificate [PICLUSTER_CERT]")
    g.add_argument("--key", type=argtypes.text, help="client key [PICLUSTER_KEY]")


def _api_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("HTTPS API (docs/API.md)")
    g.add_argument(
        "--api-port",
        type=argtypes.setting("api_port", int),
        metavar="PORT",
        help=f"TCP port of this agent's HTTPS API; 0: none (default {defaults.API_PORT})",
    )
    g.add_argument(
        "--api-listen",
        type=argtypes.setting("api_listen"),
        metavar="ADDRESS",
        help=f"address the API listens on (default {defaults.API_LISTEN})",
    )
    g.add_argument(
        "--api-cert",
        type=argtypes.setting("api_cert"),
        metavar="FILE",
        help="the API's server certificate (without it and --api-key: no API)",
    )
    g.add_argument(
        "--api-key", type=argtypes.setting("api_key"), metavar="FILE", help="its private key"
    )


def _output_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--output",
        choices=output.OUTPUT_FORMATS,
        action=output.DocumentFormat,
        default="text",
        help="text, wide (more columns), json or yaml (one document)",
    )


def _load(args: argparse.Namespace) -> tuple[dict[str, Any], Connection]:
    return from_flags(args)


def connect(args: argparse.Namespace) -> Client:
    _, conn = _load(args)
    return Client.from_connection(conn)


# ---------------------------------------------------------------- subcommands


def cmd_agent(args: argparse.Namespace) -> int:
    from ..duties.agent import Agent, leader_heartbeat
    from ..duties.periodic import periodic_duty
    from ..duties.scheduler import scheduler_duty
    from ..duties.worker import worker_duty_factory
    from ..observe import journal
    from ..observe.metrics import AgentMetrics, NoMetrics

    file, conn = _load(args)
    cfg = build_agent_config(
        file,
        conn,
        name=args.name,
        lease_ttl=args.lease_ttl,
        etcd_election_timeout=args.etcd_election_timeout,
        slots=args.slots,
        labels=args.label,
        data_dir=args.data_dir,
        master=False if args.no_master else None,
        address=args.address,
        job_user=args.job_user,
        log_level=args.log_level,
        prefetch=args.prefetch,
        api_port=args.api_port,
        api_listen=args.api_listen,
        api_cert=args.api_cert,
        api_key=args.api_key,
    )
    ensure_data_dir(cfg.data_dir)
    journal.configure(cfg.name, cfg.log_level)
    metrics = NoMetrics() if args.no_metrics else AgentMetrics()
    agent = Agent(
        cfg,
        master_duties=[leader_heartbeat, scheduler_duty(cfg, metrics), periodic_duty],
        worker_duty=worker_duty_factory(cfg, metrics),
        metrics=metrics,
    )
    if cfg.api_enabled:
        from ..api.server import make_server

        # Built now, so that an unusable certificate is refused before anything starts.
        agent.services.append(make_server(cfg, agent.client, agent))
    # Fail fast on bad endpoints/TLS before serving: a typo should not look like an outage.
    agent.client.status() if args.check_connection else None
    if not cfg.api_enabled:
        logging.getLogger(__name__).info(
            "no HTTPS API on this node (%s)",
            "api_port is 0" if cfg.api_port == 0 else "no api_cert/api_key configured",
        )

    def on_signal(signum: int, _frame: Any) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        # Not here: the main thread may be inside the very wait that stop() must wake,
        # holding that wait's lock, and a handler runs on the main thread (a deadlock).
        # A bare thread takes none of threading's locks to start.
        _thread.start_new_thread(agent.stop, ())

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # What exists now (modules, classes, the config) lives as long as the agent: out of the
    # collector's sight, each full collection skips its ~50,000 objects (10-25 ms of CPU).
    gc.freeze()
    agent.run()
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    client = connect(args)
    if not args.watch:
        return _show_nodes(client, args)
    keys = client.keys
    prefixes = [keys.nodes_dir, keys.drain_dir, keys.election_dir]
    return watch(client, prefixes, args.output, lambda: _show_nodes(client, args))


def _show_nodes(client: Client, args: argparse.Namespace) -> int:
    views = client.nodes()
    warn_alarms(client.etcd.raised_alarms())
    data = [
        {
            "name": v.info.name,
            "role": v.role,
            "drained": v.drained,
            "labels": v.info.labels,
            "slots": v.info.slots,
            "version": v.info.version,
            "address": v.info.address,
            "master_eligible": v.info.master_eligible,
            "started_at": v.info.started_at,
        }
        for v in views
    ]
    rows = [
        (
            d["name"],
            d["role"] + (" (drained)" if d["drained"] else ""),
            d["slots"],
            ",".join(f"{k}={val}" for k, val in sorted(d["labels"].items())) or "-",
            d["version"],
            d["address"],
        )
        for d in data
    ]
    headers = ("name", "role", "slots", "labels", "version", "address")
    wide = [
        (*row, "yes" if d["master_eligible"] else "no", _since(d["started_at"]))
        for row, d in zip(rows, data, strict=True)
    ]
    emit(args.output, data, headers, rows, wide=((*headers, "master-eligible", "up"), wide))
    return 0


def _since(started_at: float | None) -> str:
    if not started_at:
        return "-"
    seconds = int(time.time() - started_at)
    hours, minutes = seconds // 3600, seconds % 3600 // 60
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds % 60:02d}s"


def cmd_master(args: argparse.Namespace) -> int:
    master = connect(args).master()
    if master is None:
        if args.output == "json":
            emit("json", None)
        error("no master elected")
        return 4
    leader, since = master.leader, master.since
    data = {
        "name": leader.name,
        "key": leader.key,
        "lease": f"{leader.lease:x}",
        "create_revision": leader.create_revision,
        "since": since,
    }
    if args.output == "json":
        emit("json", data)
    else:
        ago = f" (master for {time.time() - since:.0f}s)" if since else ""
        print(f"{leader.name}{ago}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(agents=args.agents, jobs=args.jobs, keep=args.keep)


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="picluster",
        description="Run and use a picluster: a self-healing job cluster on etcd.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"picluster {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("agent", help="run this node's agent (normally as a systemd service)")
    _connection_options(p)
    p.add_argument(
        "--name", type=argtypes.setting("name"), help="node name (default: the hostname)"
    )
    p.add_argument(
        "--lease-ttl",
        type=argtypes.setting("lease_ttl", int),
        help=f"session lease TTL in seconds (default {defaults.LEASE_TTL})",
    )
    p.add_argument(
        "--slots", type=argtypes.setting("slots", int), help="job slots (default: CPU count)"
    )
    p.add_argument(
        "--label",
        type=argtypes.label,
        action="append",
        metavar="K=V",
        help="node label (repeatable)",
    )
    p.add_argument(
        "--data-dir",
        type=argtypes.setting("data_dir"),
        help=f"job logs and work dirs (default {defaults.DATA_DIR})",
    )
    p.add_argument(
        "--etcd-election-timeout",
        type=argtypes.setting("etcd_election_timeout", float),
        metavar="SECONDS",
        help="etcd's --election-timeout, in seconds, that the lease TTL must ride out "
        f"(default {defaults.ETCD_ELECTION_TIMEOUT:g}, the etcd role's)",
    )
    p.add_argument("--no-master", action="store_true", help="never campaign: a worker only")
    p.add_argument(
        "--address", type=argtypes.setting("address"), help="address advertised in the registry"
    )
    p.add_argument(
        "--job-user",
        type=argtypes.setting("job_user"),
        help="run jobs as this user (when the agent runs as root)",
    )
    p.add_argument(
        "--prefetch",
        type=argtypes.setting("prefetch", int),
        help="jobs the master may queue on this node beyond its slots (default 0): more "
        "throughput for short jobs, but a later higher-priority job may wait behind them",
    )
    _api_options(p)
    p.add_argument(
        "--log-level",
        type=argtypes.setting("log_level"),
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (default INFO)",
    )
    p.add_argument(
        "--no-check-connection",
        dest="check_connection",
        action="store_false",
        help="start even if etcd is unreachable now (the agent retries with backoff)",
    )
    p.add_argument(
        "--no-metrics",
        action="store_true",
        help="keep no Prometheus metrics (to measure their cost: bench/metrics_cost.py)",
    )
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("nodes", help="list registered nodes with their role")
    _connection_options(p)
    _output_option(p)
    watch_option(p, "until Ctrl-C")
    p.set_defaults(func=cmd_nodes)

    p = sub.add_parser("master", help="show the current master")
    _connection_options(p)
    _output_option(p)
    p.set_defaults(func=cmd_master)

    p = sub.add_parser("demo", help="run a local cluster on loopback: election, jobs, failover")
    p.add_argument(
        "--agents",
        type=argtypes.integer(2, DEMO_MAX_AGENTS),
        default=3,
        help=f"number of agents, 2-{DEMO_MAX_AGENTS}: one fails over to another (default 3)",
    )
    p.add_argument(
        "--jobs",
        type=argtypes.integer(0, DEMO_MAX_JOBS),
        default=200,
        help=f"jobs in the demo batch, 0-{DEMO_MAX_JOBS} (default 200)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the working directory (etcd data, agents' logs); a failed demo always does",
    )
    p.set_defaults(func=cmd_demo)

    _register_optional(sub)
    return parser


def _register_optional(sub: Any) -> None:
    """Subcommands that live in their own modules."""
    from . import cron as cron_cli
    from . import doctor as doctor_cli
    from . import jobs as jobs_cli
    from . import logs as logs_cli

    jobs_cli.add_parsers(sub, _connection_options, _output_option)
    completion.add_parser(sub)
    cron_cli.add_parser(sub, _connection_options, _output_option)
    doctor_cli.add_parser(sub, _connection_options, _output_option)
    logs_cli.add_parsers(sub, _connection_options, _output_option)  # after jobs: run copies submit
    try:
        from . import provision
    except ImportError:  # the provisioning extra is not installed
        return
    provision.add_parser(sub)


def main(argv: list[str] | None = None) -> int:
    output.reset()
    parser = build_parser()
    completion.answer(parser)  # a TAB in the shell: print the completions and exit
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        error(str(e))
        return e.exit_code
    except (NoSpace, TooManyRequests) as e:
        error(str(e))  # it answered, and refused: nothing was accepted
        return e.exit_code
    except Unavailable as e:
        error(f"cluster unreachable: {e}")
        return e.exit_code
    except NotFound as e:
        error(str(e))
        return e.exit_code
    except PiclusterError as e:
        error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`picluster jobs | head`): not an error worth a line.
        return 0
    except Exception as e:
        # A bug, not bad input: still one line, and the traceback on request.
        if os.environ.get("PICLUSTER_DEBUG"):
            raise
        error(f"internal error: {type(e).__name__}: {e} (PICLUSTER_DEBUG=1 shows the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
