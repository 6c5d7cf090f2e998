"""The client side of the `runnerd` command: talk to a running daemon over its REST API.

`runners`, `env`, `runs`, `schedules` and `logs` (wired up in cli.py) each end in
`run(args)`, which connects to `--url`/`$RUNNERD_URL` with `--token`/`$RUNNERD_TOKEN`, performs
one command with aiohttp under `asyncio.run`, prints tables (or the API's JSON with
`--json`) and turns every failure into a one-line message and an exit code — never a
traceback. Nothing here reads the daemon's config: the API is the only contract.

Exit codes: 0 success; 1 an error from the API or the connection; 2 a usage error
(also argparse's); `runs trigger --wait` ends with the run's own exit code, or, when
the run failed for another reason, with a code of its own (errors.FAILURE_EXIT_CODES):
124 timeout (as coreutils' `timeout`), 125 never started (image_pull_failed,
start_failed), 126 lost, 130 canceled (also an interrupted client: 128 + SIGINT).

The package: `http` talks to the daemon (one session, JSON in and out, errors
as ApiError), `commands` are the subcommands and `run`, their entry point,
`render` prints tables and `key: value` lines, `errors` holds the exit codes.
"""

from __future__ import annotations

from .commands import (
    NO_LIMIT,
    Command,
    comma_list,
    env_list,
    env_set,
    env_unset,
    exit_codes,
    follow_logs,
    key_val,
    logs,
    max_runs,
    run,
    run_at,
    runners_create,
    runners_delete,
    runners_list,
    runners_show,
    runners_update,
    runners_warm,
    runs_cancel,
    runs_list,
    runs_show,
    runs_trigger,
    schedules_create,
    schedules_delete,
    schedules_list,
    schedules_pause,
    schedules_resume,
    schedules_update,
)
from .errors import (
    EXIT_CANCELED,
    EXIT_ERROR,
    EXIT_LOST,
    EXIT_NOT_STARTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    FAILURE_EXIT_CODES,
    ApiError,
    CliError,
)
from .http import DEFAULT_URL, Client

__all__ = [
    "DEFAULT_URL",
    "EXIT_CANCELED",
    "EXIT_ERROR",
    "EXIT_LOST",
    "EXIT_NOT_STARTED",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "FAILURE_EXIT_CODES",
    "NO_LIMIT",
    "ApiError",
    "CliError",
    "Client",
    "Command",
    "comma_list",
    "env_list",
    "env_set",
    "env_unset",
    "exit_codes",
    "follow_logs",
    "key_val",
    "logs",
    "max_runs",
    "run",
    "run_at",
    "runners_create",
    "runners_delete",
    "runners_list",
    "runners_show",
    "runners_update",
    "runners_warm",
    "runs_cancel",
    "runs_list",
    "runs_show",
    "runs_trigger",
    "schedules_create",
    "schedules_delete",
    "schedules_list",
    "schedules_pause",
    "schedules_resume",
    "schedules_update",
]
