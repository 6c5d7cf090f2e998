"""Prometheus metrics: what runnerd counts, in one place, on its own registry.

Other modules call the small functions here at the moments that matter (a run
started or completed, an image pulled, an engine call failed); the HTTP
middleware times every request. `render()` produces the text format.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from .models import Run

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_RUN_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

RUNS_COMPLETED = Counter(
    "runnerd_runs_completed",
    "Runs that reached a final status, by status and failure_reason.",
    ["status", "failure_reason"],
    registry=REGISTRY,
)
RUN_RETRIES = Counter(
    "runnerd_run_retries",
    "Retries queued (a failed attempt its retry policy tries again), by failure_reason.",
    ["reason"],
    registry=REGISTRY,
)
RUNS_NOW = Gauge(
    "runnerd_runs", "Runs pending or running right now.", ["status"], registry=REGISTRY
)
RUN_DURATION = Histogram(
    "runnerd_run_duration_seconds",
    "Time from container start to completion.",
    buckets=_RUN_BUCKETS,
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "runnerd_run_queue_wait_seconds",
    "Time from trigger to container start.",
    buckets=_WAIT_BUCKETS,
    registry=REGISTRY,
)
CHAINED_RUNS = Counter(
    "runnerd_chained_runs",
    "Runs made by a chain (on_success, on_failure), by the parent run's status.",
    ["parent_status"],
    registry=REGISTRY,
)
IMAGE_PULLS = Counter(
    "runnerd_image_pulls", "Image pulls, by result (ok or error).", ["result"], registry=REGISTRY
)
ENGINE_ERRORS = Counter(
    "runnerd_docker_api_errors",
    "Docker Engine API calls that failed, by operation.",
    ["operation"],
    registry=REGISTRY,
)
SCHEDULE_FIRES = Counter(
    "runnerd_schedule_fires",
    "Runs made by schedules firing (one per slot fired).",
    registry=REGISTRY,
)
SCHEDULE_SKIPPED_FIRES = Counter(
    "runnerd_schedule_skipped_fires",
    "Schedule fires that made no run, by reason: forbid (concurrency_policy forbid and"
    " a run of the schedule still active), not_triggerable (its runner cannot run now).",
    ["reason"],
    registry=REGISTRY,
)
SCHEDULE_MISSED_SLOTS = Counter(
    "runnerd_schedule_missed_slots",
    "Schedule slots never fired because runnerd was down or busy past them (only the"
    " latest slot inside starting_deadline_seconds fires).",
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "runnerd_http_requests",
    "HTTP requests, by method, route and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "runnerd_http_request_duration_seconds",
    "HTTP request latency, by method and route.",
    ["method", "route"],
    registry=REGISTRY,
)

# The classic text format generate_latest() writes (and every Prometheus reads).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def run_started(run: Run) -> None:
    if run.started_at is not None:
        QUEUE_WAIT.observe(max(0.0, (run.started_at - run.created_at) / 1000))


def run_completed(run: Run) -> None:
    RUNS_COMPLETED.labels(
        run.status.value, run.failure_reason.value if run.failure_reason else ""
    ).inc()
    if run.will_retry:  # its retry was made in the same commit
        RUN_RETRIES.labels(run.failure_reason.value if run.failure_reason else "").inc()
    if run.started_at is not None and run.completed_at is not None:
        RUN_DURATION.observe(max(0.0, (run.completed_at - run.started_at) / 1000))


def run_chained(parent: Run) -> None:
    CHAINED_RUNS.labels(parent.status.value).inc()


def image_pulled(ok: bool) -> None:
    IMAGE_PULLS.labels("ok" if ok else "error").inc()


def engine_error(operation: str) -> None:
    ENGINE_ERRORS.labels(operation).inc()


def schedule_fired() -> None:
    SCHEDULE_FIRES.inc()


def schedule_skipped(reason: str) -> None:
    SCHEDULE_SKIPPED_FIRES.labels(reason).inc()


def schedule_missed(slots: int) -> None:
    SCHEDULE_MISSED_SLOTS.inc(slots)


def render(pending: int, running: int) -> bytes:
    RUNS_NOW.labels("pending").set(pending)
    RUNS_NOW.labels("running").set(running)
    return generate_latest(REGISTRY)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def http_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts and times every request by its route pattern (never the raw path,
    which would make a label per id)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        resource = request.match_info.route.resource if request.match_info.route else None
        route = resource.canonical if resource is not None else "unmatched"
        HTTP_REQUESTS.labels(request.method, route, str(status)).inc()
        HTTP_LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
