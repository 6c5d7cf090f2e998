"""What the client prints: tables, `key: value` lines, JSON, a run's output, and
the one-line errors on stderr."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from .errors import CliError


def fail(e: CliError) -> int:
    """The error's lines on stderr, after whatever stdout holds; its exit code."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    for line in e.lines:
        print(f"runnerd: {line}", file=sys.stderr)
    return e.code


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def cell(value: Any) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def when(value: str | None) -> str:
    """`2026-01-15T10:01:00.000+01:00` → `2026-01-15 10:01:00` for a table."""
    if not value:
        return "-"
    match = re.match(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)", value)
    return f"{match.group(1)} {match.group(2)}" if match else value


# Fields left out when null: a run's `node` is null on the docker backend, always.
SHOWN_WHEN_SET = {"node"}


def show(obj: dict[str, Any]) -> None:
    """`key: value` lines, keys aligned (a null SHOWN_WHEN_SET field: no line)."""
    obj = {k: v for k, v in obj.items() if v is not None or k not in SHOWN_WHEN_SET}
    width = max(len(k) for k in obj) + 1
    for key, value in obj.items():
        if key == "instance_type" and isinstance(value, dict):
            shown = (
                f"{value.get('slug')} ({value.get('name')}: {value.get('cpu')} CPU, "
                f"{value.get('mem')} MiB)"
            )
        elif key == "retry_policy" and isinstance(value, dict):
            shown = retry_policy(value)
        elif key == "log_incomplete" and value is True:
            shown = "true (the stored log may miss output: see the notes in the log)"
        else:
            shown = cell(value)
        print(f"{key + ':':<{width}} {shown}")


def retry_policy(policy: dict[str, Any]) -> str:
    """A runner's `retry_policy` in one line, e.g. `2 retries on nonzero_exit (exit
    codes 1, 3), timeout; back-off 10 s, doubled up to 600 s`."""
    codes = policy.get("retry_exit_codes")
    reasons = [
        f"{r} (exit codes {', '.join(map(str, codes))})" if r == "nonzero_exit" and codes else r
        for r in policy.get("retry_on") or []
    ]
    count = policy.get("max_retries")
    return (
        f"{count} {'retry' if count == 1 else 'retries'} on {', '.join(reasons) or 'nothing'}; "
        f"back-off {policy.get('backoff_seconds')} s, doubled up to "
        f"{policy.get('backoff_max_seconds')} s"
    )


def warn_log_incomplete(run: dict[str, Any]) -> None:
    """On stderr, after a run's output (or its fields), when runnerd knows its stored
    log may miss output: whoever reads the output should not take it as whole."""
    if run.get("log_incomplete") is True:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        print(
            f"runnerd: the log of run {run.get('id')} may be incomplete: "
            "see the notes runnerd wrote in the log",
            file=sys.stderr,
        )


def write_out(data: bytes) -> None:
    if data:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


RUN_HEADERS = ["ID", "STATUS", "TRIGGER", "ATTEMPT", "EXIT", "STARTED", "COMPLETED", "REASON"]


def run_row(r: dict[str, Any]) -> list[str]:
    return [
        r["id"],
        r["status"],
        cell(r.get("trigger")),
        cell(r.get("attempt")),
        cell(r.get("exit_code")),
        when(r.get("started_at")),
        when(r.get("completed_at")),
        cell(r.get("failure_reason")),
    ]


def run_table(runs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The headers and rows of `runs list`. NOT BEFORE only when a listed run waits
    for its time (a delayed run, a retry's back-off): the table is wide enough."""
    if not any(_waits(r) for r in runs):
        return RUN_HEADERS, [run_row(r) for r in runs]
    rows = [[*run_row(r), when(r.get("not_before")) if _waits(r) else "-"] for r in runs]
    return [*RUN_HEADERS, "NOT BEFORE"], rows


def _waits(r: dict[str, Any]) -> bool:
    return r.get("status") == "pending" and r.get("not_before") is not None


def schedule_row(s: dict[str, Any]) -> list[str]:
    return [
        s["id"],
        cell(s["cron"]),
        cell(s["timezone"]),
        "yes" if s.get("enabled") else "no",
        when(s.get("next_run_at")),
        when(s.get("last_run_at")),
        cell(s.get("missed_count")),
    ]
