"""The Run page: status, times, exit code, why it failed, its attempt chain, its
log (live while it runs, over Server-Sent Events), the raw log's download and the
Cancel run button.

The live log, the download and the cancel are the API's own code (api.logs_sse,
api.send_text_log, api.cancel), called with the session's rights instead of a key's.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import MultiDict

from .. import api, contract
from ..api import CONFIG, LOGS, STORE
from ..logs import LogStore, Record
from ..models import TERMINAL_STATUSES, Run, Status
from . import views

# The page shows the log's tail, never all of it: a 100 MB log must not make a
# 100 MB page. The rest is in the raw download.
TAIL_ENTRIES = 1000
TAIL_BYTES = 256 * 1024


def add_routes(r: web.UrlDispatcher) -> None:
    base = "/runners/{rid}/runs/{id}"
    r.add_get(base, run_page, name="run")
    r.add_get(base + "/events", run_events, name="run_events")
    r.add_get(base + "/log", run_log, name="run_log")
    r.add_post(base + "/cancel", cancel_run, name="cancel_run")


async def the_run(request: web.Request) -> Run:
    """The run of the path's {rid} and {id} (the dashboard's names); 404 without one."""
    return await api.run_or_404(request, "rid", "id")


def status_text(run: dict[str, Any]) -> str:
    """What #run-status says: the status, and why for a failed run."""
    if run["status"] == Status.FAILED.value and run["failure_reason"]:
        return f"failed: {run['failure_reason']}"
    return str(run["status"])


def log_tail(logs: LogStore, run_id: str) -> tuple[list[Record], bool]:
    """(the last entries of the log, within TAIL_ENTRIES and TAIL_BYTES; whether
    earlier output was left out). Runs in the log read pool."""
    try:
        end = logs.path(run_id).stat().st_size
    except FileNotFoundError:
        return [], False
    records = logs.page(run_id, limit=TAIL_ENTRIES, before=end + 1)
    size = 0
    first = len(records)
    while first > 0 and size + len(records[first - 1].data) <= TAIL_BYTES:
        first -= 1
        size += len(records[first].data)
    shown = records[first:]
    cut = bool(records) and (first > 0 or records[0].offset > 0)
    return shown, cut or (not shown and end > 0)


def can_cancel(run: Run, retry: Run | None) -> bool:
    """Whether Cancel run would do something: the run has not ended, or it failed
    and its next attempt still waits (cancelling the run cancels that retry)."""
    if run.status not in TERMINAL_STATUSES:
        return True
    return run.status is Status.FAILED and retry is not None and retry.status is Status.PENDING


async def run_page(request: web.Request) -> web.StreamResponse:
    run = await the_run(request)
    store = request.config_dict[STORE]
    tz = request.config_dict[CONFIG].tz
    logs = request.config_dict[LOGS]
    retry = await store.get_run(run.retry_id, run.runner_id)
    latest = await store.latest_retry(run.id) if run.status is Status.FAILED else None
    runner = await store.get_runner(run.runner_id)
    # A chain's parent may be another runner's run.
    parent = await store.get_run(run.parent_run_id) if run.parent_run_id else None
    records, cut = await logs.reading(log_tail, logs, run.id)
    live = run.status not in TERMINAL_STATUSES
    events_url = None
    if live:
        events_url = str(request.app.router["run_events"].url_for(rid=run.runner_id, id=run.id))
        if records:
            events_url += f"?after={records[-1].offset}"
    shown = contract.run_json(run, tz)
    return views.page(
        request,
        "run.html",
        {
            "run": shown,
            "run_runner_id": run.runner_id,
            "parent": (
                {"id": parent.id, "runner_id": parent.runner_id} if parent is not None else None
            ),
            "runner_name": runner.name if runner is not None else None,
            "image": run.image,
            "instance_type": {
                "slug": run.instance_type,
                "cpu": run.cpu,
                "mem": run.mem,
                "pids": run.pids,
            },
            "duration_ms": (
                run.completed_at - run.started_at
                if run.completed_at is not None and run.started_at is not None
                else None
            ),
            "status_text": status_text(shown),
            "retry": contract.run_json(retry, tz) if retry is not None else None,
            "entries": [
                contract.log_entry_json(r.offset, r.stream, r.ts_ns, r.data, tz) for r in records
            ],
            "earlier_cut": cut,
            "events_url": events_url,
            "log_url": str(request.app.router["run_log"].url_for(rid=run.runner_id, id=run.id)),
            "cancel_url": str(
                request.app.router["cancel_run"].url_for(rid=run.runner_id, id=run.id)
            ),
            "cancelable": can_cancel(run, latest),
        },
    )


def parse_events_query(
    query: MultiDict[str] | Any, last_event_id: str | None
) -> tuple[int | None, str, int | None]:
    """(cursor, the name it came from, stream filter) of the live log: the page's
    `after` (the last entry it showed), unless the browser resumes with
    Last-Event-ID, which wins (it is further on)."""
    rest: MultiDict[str] = MultiDict((k, v) for k, v in query.items() if k != "after")
    cursor, stream = contract.parse_sse_logs_query(rest, last_event_id)
    if cursor is not None:
        return cursor, "Last-Event-ID", stream
    after = query.get("after")
    if after is None:
        return None, "after", stream
    if not after.isdigit() or len(after) > 19:
        raise contract.Invalid([f"after: must be a log entry id, got {after[:40]!r}"])
    return int(after), "after", stream


async def run_events(request: web.Request) -> web.StreamResponse:
    run = await the_run(request)
    cursor, name, stream = parse_events_query(request.query, request.headers.get("Last-Event-ID"))
    return await api.logs_sse(request, run, cursor, name, stream)


async def run_log(request: web.Request) -> web.StreamResponse:
    run = await the_run(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/plain; charset=utf-8",
            "Content-Disposition": f'attachment; filename="run-{run.id}.log"',
        }
    )
    return await api.send_text_log(request, run, response)


async def cancel_run(request: web.Request) -> web.StreamResponse:
    """The API's cancel (409 for an ended run, 503 while starting, as an error
    page), then back to the run's page. The overview's cancel buttons post here."""
    run = await the_run(request)
    await api.cancel(request, run)
    raise web.HTTPSeeOther(views.run_href(run))


__all__ = ["add_routes", "status_text", "log_tail", "TAIL_ENTRIES", "TAIL_BYTES"]
