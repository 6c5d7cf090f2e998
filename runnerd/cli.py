"""The `runnerd` command: `serve` runs the daemon, `keys` manages API keys; `runners`,
`env`, `runs`, `schedules` and `logs` talk to a running daemon over its API (see the
client package)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from . import __version__, client
from . import config as config_mod
from .auth import hash_secret, new_secret
from .contract import CONCURRENCY_POLICIES, PULL_POLICIES
from .crypto import SecretKeyError
from .models import Scope
from .store import Conflict, Store, StoreError
from .timefmt import format_ms

SYSTEM_CONFIG = Path("/etc/runnerd/config.toml")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    if not getattr(args, "needs_config", True):
        return int(args.func(args) or 0)  # a client command: only the daemon's API
    try:
        config = config_mod.load(_config_path(args.config))
    except config_mod.ConfigError as e:
        # at err priority under journald: `journalctl -p err` shows why the unit failed
        print(f"{'<3>' if _stderr_is_journal() else ''}runnerd: bad config: {e}", file=sys.stderr)
        return 2
    return int(args.func(args, config) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runnerd", description="Run containerized jobs over a REST API."
    )
    parser.add_argument("--version", action="version", version=f"runnerd {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    config_help = (
        "config file (default: $RUNNERD_CONFIG, else /etc/runnerd/config.toml "
        "if it exists, else built-in defaults)"
    )

    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", metavar="PATH", help=config_help)
    serve.set_defaults(func=_serve)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(metavar="ACTION", required=True)
    create = keys_sub.add_parser("create", help="make a key and print its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", choices=[s.value for s in Scope], default=Scope.FULL.value)
    create.add_argument("--config", metavar="PATH", help=config_help)
    create.set_defaults(func=_keys_create)
    list_ = keys_sub.add_parser("list", help="list keys (never their secrets)")
    list_.add_argument("--config", metavar="PATH", help=config_help)
    list_.set_defaults(func=_keys_list)
    revoke = keys_sub.add_parser("revoke", help="delete a key; it stops working at once")
    revoke.add_argument("name")
    revoke.add_argument("--config", metavar="PATH", help=config_help)
    revoke.set_defaults(func=_keys_revoke)

    _client_parsers(sub)
    return parser


def _client_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`runners`, `env`, `runs`, `schedules`, `logs`: commands that talk to a running daemon."""
    common = argparse.ArgumentParser(add_help=False)
    conn = common.add_argument_group("daemon")
    conn.add_argument(
        "--url",
        metavar="URL",
        help=f"the daemon (default: $RUNNERD_URL, else {client.DEFAULT_URL})",
    )
    conn.add_argument("--token", metavar="KEY", help="API key (default: $RUNNERD_TOKEN; required)")
    conn.add_argument(
        "--json",
        action="store_true",
        help="print the API's JSON answer instead of a table, for scripts",
    )

    def command(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        func: client.Command,
        help: str,
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=client.run, command=func, needs_config=False)
        return p

    env_help = "an env variable KEY=VAL (repeatable)"

    def runner_fields(p: argparse.ArgumentParser, create: bool) -> None:
        p.add_argument("--name", required=create, help="3-50 characters, unique")
        p.add_argument(
            "--image",
            required=create,
            help="image name, e.g. busybox or registry:5000/team/job "
            "(a tag may be appended: busybox:1.36)",
        )
        p.add_argument("--tag", help="image tag (default: latest)")
        cmd = p.add_mutually_exclusive_group()
        cmd.add_argument(
            "--command",
            dest="command_line",
            metavar="SHELL_COMMAND",
            help="run as sh -c SHELL_COMMAND",
        )
        cmd.add_argument(
            "--argv-json",
            metavar="JSON",
            help='exec form as a JSON array, e.g. \'["sleep", "30"]\'',
        )
        p.add_argument("--entrypoint", help="replaces the image's ENTRYPOINT ('' clears it)")
        p.add_argument(
            "--timeout", type=int, metavar="SECONDS", help="timeout_seconds, 1-86400 (default 3600)"
        )
        p.add_argument("--instance-type", metavar="SLUG")
        p.add_argument(
            "--max-concurrent-runs",
            type=client.max_runs,
            metavar="N",
            help="1-1000, or 'none' for only the daemon's limit",
        )
        p.add_argument(
            "--registry",
            metavar="REGISTRY_ID",
            help="container registry id to pull with, or 'none'",
        )
        p.add_argument("--pull-policy", choices=PULL_POLICIES)
        p.add_argument(
            "--webhook-url", metavar="URL", help="POSTed when a run completes, or 'none'"
        )
        p.add_argument(
            "-e",
            "--env",
            action="append",
            type=client.key_val,
            metavar="KEY=VAL",
            help=env_help
            if create
            else env_help + "; replaces ALL the runner's env variables "
            "(to change one, use: runnerd env set)",
        )
        retries = p.add_argument_group(
            "retries",
            "a failed run is tried again as a new run (attempt 2, 3, ...)"
            + ("" if create else "; the options given change the runner's policy, the rest stays"),
        )
        retries.add_argument(
            "--max-retries", type=int, metavar="N", help="retries after the first attempt, 0-20"
        )
        retries.add_argument(
            "--backoff",
            type=int,
            metavar="SECONDS",
            help="wait before the first retry, doubled for each one after it (default 10)",
        )
        retries.add_argument(
            "--backoff-max", type=int, metavar="SECONDS", help="the longest wait (default 600)"
        )
        retries.add_argument(
            "--retry-on",
            type=client.comma_list,
            metavar="REASONS",
            help="failure reasons retried, comma-separated (default "
            "nonzero_exit,timeout,lost,start_failed; also image_pull_failed)",
        )
        retries.add_argument(
            "--retry-exit-codes",
            type=client.exit_codes,
            metavar="CODES",
            help="only these exit codes are retried, e.g. 1,2; 'any' (default): every non-zero",
        )
        retries.add_argument(
            "--no-retries",
            action="store_true",
            help="never retry (retry_policy null)",
        )
        chains = p.add_argument_group("chains", "runners triggered when a run of this one ends")
        chains.add_argument(
            "--on-success",
            type=client.comma_list,
            metavar="RUNNERS",
            help="runner ids or names, comma-separated, triggered when a run succeeds ('' clears)",
        )
        chains.add_argument(
            "--on-failure",
            type=client.comma_list,
            metavar="RUNNERS",
            help="triggered when a run fails for good, after its retries ('' clears)",
        )

    runners = sub.add_parser("runners", help="list, show, create, update, delete runners")
    runners_sub = runners.add_subparsers(metavar="ACTION", required=True)
    command(runners_sub, "list", client.runners_list, "list runners")
    p = command(runners_sub, "show", client.runners_show, "show a runner")
    p.add_argument("runner", metavar="ID_OR_NAME")
    p = command(runners_sub, "create", client.runners_create, "create a runner")
    runner_fields(p, create=True)
    p = command(runners_sub, "update", client.runners_update, "change some of a runner's fields")
    p.add_argument("runner", metavar="ID_OR_NAME")
    runner_fields(p, create=False)
    p = command(
        runners_sub,
        "warm",
        client.runners_warm,
        "pull the runner's image now (with a progress bar)",
    )
    p.add_argument("runner", metavar="ID_OR_NAME")
    p = command(
        runners_sub, "delete", client.runners_delete, "delete a runner with its runs and logs"
    )
    p.add_argument("runner", metavar="ID_OR_NAME")

    env = sub.add_parser("env", help="a runner's default env variables")
    env_sub = env.add_subparsers(metavar="ACTION", required=True)
    p = command(env_sub, "list", client.env_list, "list a runner's env variables")
    p.add_argument("runner", metavar="RUNNER", help="runner id or name")
    p = command(env_sub, "set", client.env_set, "create or change env variables")
    p.add_argument("runner", metavar="RUNNER", help="runner id or name")
    p.add_argument("pairs", nargs="+", type=client.key_val, metavar="KEY=VAL")
    p = command(env_sub, "unset", client.env_unset, "delete env variables by key")
    p.add_argument("runner", metavar="RUNNER", help="runner id or name")
    p.add_argument("keys", nargs="+", metavar="KEY")

    runs = sub.add_parser("runs", help="list, show, trigger, cancel runs")
    runs_sub = runs.add_subparsers(metavar="ACTION", required=True)
    p = command(runs_sub, "list", client.runs_list, "list a runner's runs, newest first")
    p.add_argument("runner", metavar="RUNNER", help="runner id or name")
    p.add_argument(
        "--status", help="only runs in this status: pending, running, succeeded or failed"
    )
    p.add_argument("--limit", type=int, help="at most this many (1-1000, default 50)")
    p.add_argument("--before", metavar="RUN", help="only runs queued before this run (paging)")
    p = command(runs_sub, "show", client.runs_show, "show a run")
    p.add_argument("runner", metavar="RUNNER", help="runner id or name")
    p.add_argument("run", metavar="RUN", help="run id")
    p = command(
        runs_sub,
        "trigger",
        client.runs_trigger,
        "queue a run; with --wait, print its output and exit with its exit code",
    )
    p.add_argument("runner", metavar="RUNNER", help="runner id or name")
    p.add_argument(
        "-e",
        "--env",
        action="append",
        type=client.key_val,
        metavar="KEY=VAL",
        help="override an env variable for this run only (repeatable)",
    )
    p.add_argument(
        "--at",
        type=client.run_at,
        metavar="TIME",
        help="start it not before TIME: 2026-01-15T22:00:00+01:00 (with an offset, or Z), "
        "or from now: +90s, +10m, +2h, +1d (run_at; at most a year ahead)",
    )
    p.add_argument(
        "--timeout",
        type=int,
        metavar="SECONDS",
        help="this run's timeout_seconds, 1-86400, instead of the runner's",
    )
    p.add_argument(
        "--idempotency-key",
        metavar="K",
        help="a retry with the same key within 24 h queues nothing new",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow the output until the run ends and exit with its exit code "
        "(124 timeout, 125 could not start, 126 lost, 130 canceled)",
    )
    p = command(runs_sub, "cancel", client.runs_cancel, "cancel a pending or running run")
    p.add_argument("runner", metavar="RUNNER", help="runner id or name")
    p.add_argument("run", metavar="RUN", help="run id")

    def schedule_fields(p: argparse.ArgumentParser, create: bool) -> None:
        p.add_argument(
            "--cron",
            required=create,
            metavar="EXPR",
            help="five cron fields ('*/15 9-17 * * MON-FRI'), a macro (@hourly, @daily, "
            "@weekly, @monthly, @yearly) or '@every DURATION' (30s, 5m, 1h30m)",
        )
        p.add_argument(
            "--timezone",
            metavar="ZONE",
            help="IANA zone the cron fields are read in, e.g. Europe/Berlin "
            "(default: the daemon's)",
        )
        state = p.add_mutually_exclusive_group()
        state.add_argument(
            "--disabled",
            dest="enabled",
            action="store_const",
            const=False,
            help="paused: it does not fire (see: runnerd schedules resume)",
        )
        if not create:
            state.add_argument(
                "--enabled", dest="enabled", action="store_const", const=True, help="resumed"
            )
        env = p.add_mutually_exclusive_group()
        env.add_argument(
            "-e",
            "--env",
            action="append",
            type=client.key_val,
            metavar="KEY=VAL",
            help="override an env variable for the runs it fires (repeatable)"
            + ("" if create else "; replaces ALL the schedule's overrides"),
        )
        if not create:
            env.add_argument(
                "--clear-env", action="store_true", help="remove all the schedule's overrides"
            )
        p.add_argument(
            "--concurrency-policy",
            choices=CONCURRENCY_POLICIES,
            help="while a run it fired is pending or running: allow (default) fires anyway, "
            "forbid skips the fire, replace cancels that run and fires",
        )
        p.add_argument(
            "--starting-deadline",
            type=int,
            metavar="SECONDS",
            help="starting_deadline_seconds, 0-86400 (default 300): how late a slot missed "
            "while the daemon was down may still fire",
        )

    schedules = sub.add_parser("schedules", help="when the clock triggers a runner")
    schedules_sub = schedules.add_subparsers(metavar="ACTION", required=True)
    p = command(schedules_sub, "list", client.schedules_list, "list a runner's schedules")
    p.add_argument("runner", metavar="RUNNER", help="runner id or name")
    p = command(schedules_sub, "create", client.schedules_create, "add a schedule to a runner")
    p.add_argument("runner", metavar="RUNNER", help="runner id or name")
    schedule_fields(p, create=True)
    p = command(
        schedules_sub, "update", client.schedules_update, "change some of a schedule's fields"
    )
    p.add_argument("runner", metavar="RUNNER", help="runner id or name")
    p.add_argument("schedule", metavar="SCHEDULE", help="schedule id")
    schedule_fields(p, create=False)
    for name, func, what in (
        ("pause", client.schedules_pause, "stop a schedule firing until it is resumed"),
        (
            "resume",
            client.schedules_resume,
            "let a paused schedule fire again, from its next slot (missed ones are not made up)",
        ),
        ("delete", client.schedules_delete, "delete a schedule (the runs it fired stay)"),
    ):
        p = command(schedules_sub, name, func, what)
        p.add_argument("runner", metavar="RUNNER", help="runner id or name")
        p.add_argument("schedule", metavar="SCHEDULE", help="schedule id")

    p = command(sub, "logs", client.logs, "print a run's output")
    p.add_argument("runner", metavar="RUNNER", help="runner id or name")
    p.add_argument("run", metavar="RUN", help="run id")
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing output as it is written, until the run ends",
    )
    p.add_argument("--tail", type=int, metavar="N", help="only the last N lines")


def _config_path(given: str | None) -> str | None:
    if given:
        return given
    if os.environ.get("RUNNERD_CONFIG"):
        return os.environ["RUNNERD_CONFIG"]
    return str(SYSTEM_CONFIG) if SYSTEM_CONFIG.exists() else None


class JournalFormatter(logging.Formatter):
    """Prefixes every line with its sd-daemon(3) priority (`<4>` for a warning), so
    journald files it at that priority and `journalctl -p warning` finds it. Every
    line: a traceback is many lines, and journald reads each as an entry."""

    PRIORITIES = {
        logging.CRITICAL: 2,
        logging.ERROR: 3,
        logging.WARNING: 4,
        logging.INFO: 6,
        logging.DEBUG: 7,
    }

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for level, p in self.PRIORITIES.items() if record.levelno >= level), 7)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def _stderr_is_journal() -> bool:
    """$JOURNAL_STREAM names the journal stream systemd connected stderr to; a child
    that inherited the variable but writes elsewhere (a pipe, a terminal) is not."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (ValueError, OSError):
        return False


def setup_logging() -> None:
    """Plain lines to stderr; journald gets priority prefixes and adds its own
    timestamps, anything else gets ours."""
    handler = logging.StreamHandler(sys.stderr)
    if _stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _serve(args: argparse.Namespace, config: config_mod.Config) -> int:
    """Runs the daemon on a loop of our own rather than asyncio.run, whose exit
    waits without a bound for the default executor's threads; the process ends
    with daemon.exit_now, the exit status saying how the stop went."""
    from . import daemon

    setup_logging()
    log = logging.getLogger("runnerd")
    loop = asyncio.new_event_loop()
    status = 1
    stopped: daemon.Stopped | None = None
    try:
        stopped = loop.run_until_complete(daemon.serve(config))
        status = stopped.exit_status
    except (OSError, SecretKeyError, StoreError) as e:
        log.error("cannot start: %s", e)
    except BaseException:
        log.exception("runnerd failed")
    finally:
        _close_loop(loop)
    if stopped is not None:
        took = time.monotonic() - (stopped.started or time.monotonic())
        if stopped.problems:
            log.error(
                "stopped in %.1f s after %s, forced: %s (exit status %d)",
                took,
                stopped.reason,
                "; ".join(stopped.problems),
                status,
            )
        else:
            log.info("stopped in %.1f s after %s (exit status %d)", took, stopped.reason, status)
    daemon.exit_now(status)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left (steps a bounded stop went on without), let it end for
    at most half a second, and close the loop without waiting for executor threads."""
    try:
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        gens = loop.create_task(loop.shutdown_asyncgens())
        loop.run_until_complete(asyncio.wait({*left, gens}, timeout=0.5))
    except Exception:
        logging.getLogger("runnerd").exception("stopping: closing the event loop failed")
    finally:
        loop.close()


def _with_store(config: config_mod.Config, action: Callable[[Store], Awaitable[int]]) -> int:
    async def run() -> int:
        async with Store(config.storage.db_path, config.storage.secret_key_path) as store:
            return int(await action(store))

    try:
        return asyncio.run(run())
    except (OSError, SecretKeyError, StoreError) as e:
        print(
            f"runnerd: cannot open the database in {config.storage.data_dir}: {e}", file=sys.stderr
        )
        return 1


def _keys_create(args: argparse.Namespace, config: config_mod.Config) -> int:
    name = args.name.strip()
    if not 1 <= len(name) <= 100 or any(ord(c) < 32 for c in name):
        print("runnerd: --name must be 1-100 printable characters", file=sys.stderr)
        return 2
    secret = new_secret()

    async def action(store: Store) -> int:
        try:
            await store.create_api_key(name, Scope(args.scope), hash_secret(secret))
        except Conflict as e:
            print(f"runnerd: {e}", file=sys.stderr)
            return 1
        print(f"Created {args.scope} API key {name!r}. Its secret is shown only now:")
        print(secret)
        return 0

    return _with_store(config, action)


def _keys_list(args: argparse.Namespace, config: config_mod.Config) -> int:
    tz = config.tz

    async def action(store: Store) -> int:
        keys = await store.list_api_keys()
        if not keys:
            print("no API keys; make one with: runnerd keys create --name NAME")
            return 0
        width = max(len(k.name) for k in keys)
        print(f"{'NAME':<{width}}  SCOPE  CREATED")
        for k in keys:
            print(f"{k.name:<{width}}  {k.scope.value:<5}  {format_ms(k.created_at, tz)}")
        return 0

    return _with_store(config, action)


def _keys_revoke(args: argparse.Namespace, config: config_mod.Config) -> int:
    async def action(store: Store) -> int:
        if await store.revoke_api_key(args.name):
            print(f"revoked API key {args.name!r}")
            return 0
        print(f"runnerd: no API key named {args.name!r}", file=sys.stderr)
        return 1

    return _with_store(config, action)
