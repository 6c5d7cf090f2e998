"""The HTTP API: routes, auth, and the JSON error shapes. Handlers speak HTTP only:
they parse with `contract`, act through the store, the scheduler and the executor's
public methods (never the engine), and render.

`make_app` builds the routes and the app's state, nothing else: wiring the parts
together (listeners such as the log followers' wake-up) is daemon.py's job."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web

from . import contract, metrics, openapi, triggers
from .auth import hash_secret, secret_from_header
from .config import Config
from .engine import EngineError, EngineUnavailable
from .executor import Executor
from .firing import Firing
from .logs import LogStore, Record
from .models import TERMINAL_STATUSES, FailureReason, Run, Scope, Status
from .scheduler import Scheduler
from .store import Conflict, NotFound, Store

log = logging.getLogger("runnerd.api")

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
LOGS = web.AppKey("logs", LogStore)
SCHEDULER = web.AppKey("scheduler", Scheduler)
EXECUTOR = web.AppKey("executor", Executor)
FIRING = web.AppKey("firing", Firing)
STOPPING = web.AppKey("stopping", asyncio.Event)  # set when the daemon begins to stop

OPENAPI_PATH = "/v1/openapi.json"  # the one /v1 path that needs no key
FOLLOW_RECHECK_SECONDS = 1.0  # a follower re-reads the run's status at least this often
SLOW_CLIENT_SECONDS = 10.0  # a client that accepts no bytes this long is dropped

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(
    config: Config,
    store: Store,
    logs: LogStore,
    scheduler: Scheduler,
    executor: Executor,
    firing: Firing,
) -> web.Application:
    """The routes and the state they use. The caller wires the parts: see
    daemon.serve (e.g. daemon.wake_log_followers for live log follows)."""
    app = web.Application(
        middlewares=[metrics.http_middleware, errors_middleware, auth_middleware],
        client_max_size=config.server.max_body_bytes,
    )
    app[CONFIG] = config
    app[STORE] = store
    app[LOGS] = logs
    app[SCHEDULER] = scheduler
    app[EXECUTOR] = executor
    app[FIRING] = firing
    app[STOPPING] = asyncio.Event()
    app[FOLLOWERS] = Followers(config.server.max_log_followers)
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics_endpoint)
    r.add_get("/v1/openapi.json", openapi_document)
    r.add_get("/v1/runners", list_runners)
    r.add_post("/v1/runners", create_runner)
    r.add_get("/v1/runners/{runner_id}", get_runner)
    r.add_patch("/v1/runners/{runner_id}", update_runner)
    r.add_delete("/v1/runners/{runner_id}", delete_runner)
    r.add_get("/v1/runners/{runner_id}/env_variables", list_env)
    r.add_post("/v1/runners/{runner_id}/env_variables", create_env)
    r.add_patch("/v1/runners/{runner_id}/env_variables/{env_id}", update_env)
    r.add_delete("/v1/runners/{runner_id}/env_variables/{env_id}", delete_env)
    r.add_get("/v1/runners/{runner_id}/runs", list_runs)
    r.add_post("/v1/runners/{runner_id}/runs", trigger_run)
    r.add_get("/v1/runners/{runner_id}/runs/{run_id}", get_run)
    r.add_get("/v1/runners/{runner_id}/runs/{run_id}/logs", run_logs)
    r.add_post("/v1/runners/{runner_id}/runs/{run_id}/cancel", cancel_run)
    r.add_post("/v1/runners/{runner_id}/warm", warm_runner)
    r.add_get("/v1/runners/{runner_id}/schedules", list_schedules)
    r.add_post("/v1/runners/{runner_id}/schedules", create_schedule)
    r.add_get("/v1/runners/{runner_id}/schedules/{schedule_id}", get_schedule)
    r.add_patch("/v1/runners/{runner_id}/schedules/{schedule_id}", update_schedule)
    r.add_delete("/v1/runners/{runner_id}/schedules/{schedule_id}", delete_schedule)
    r.add_get("/v1/container_registries", list_registries)
    r.add_post("/v1/container_registries", create_registry)
    r.add_get("/v1/container_registries/{registry_id}", get_registry)
    r.add_patch("/v1/container_registries/{registry_id}", update_registry)
    r.add_delete("/v1/container_registries/{registry_id}", delete_registry)
    return app


# -- middleware -------------------------------------------------------------------


def error_response(status: int, reason: str) -> web.Response:
    return web.json_response({"status": status, "error": reason}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON: 400 `{"errors": [...]}`, others `{"status", "error"}`."""
    try:
        return await handler(request)
    except contract.Invalid as e:
        return web.json_response({"errors": e.errors}, status=400)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        response = error_response(e.status, e.reason)
        if isinstance(e, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = ", ".join(sorted(e.allowed_methods))
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        raise  # the client went away: nothing to answer
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "Internal Server Error")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if (request.path.startswith("/v1/") or request.path == "/v1") and request.path != OPENAPI_PATH:
        secret = secret_from_header(request.headers.get("Authorization"))
        key = await request.app[STORE].api_key_by_hash(hash_secret(secret)) if secret else None
        if key is None:
            return error_response(401, "Unauthorized")
        if key.scope is not Scope.FULL and request.method not in READ_METHODS:
            return error_response(403, "Forbidden")
    return await handler(request)


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; None when it is empty."""
    raw = await request.read()  # 413 past client_max_size
    if not raw.strip():
        return None
    content_type = request.headers.get("Content-Type")
    if (
        content_type is not None
        and request.content_type not in ("application/json", "text/json")
        and not request.content_type.endswith("+json")
    ):
        raise web.HTTPUnsupportedMediaType(reason="Unsupported Media Type")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise contract.Invalid(["body: is not valid UTF-8"]) from None
    except (ValueError, RecursionError) as e:  # ValueError: e.g. a 5000-digit number
        message = (
            e.msg
            if isinstance(e, json.JSONDecodeError)
            else "nested too deeply"
            if isinstance(e, RecursionError)
            else str(e)
        )
        raise contract.Invalid([f"body: is not valid JSON: {message}"]) from None


def path_id(request: web.Request, name: str) -> str:
    """The path's id `name`, lowercased; 404 when it is not a UUID."""
    value = request.match_info[name]
    if not contract.is_uuid(value):
        raise web.HTTPNotFound()
    return value.lower()


# -- health -----------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """200 while runs can start: the engine answers and the scheduler claims runs."""
    queue = await request.app[STORE].count_active()
    try:
        engine = await request.app[EXECUTOR].engine_version()
    except EngineError as e:
        return web.json_response(
            {"status": "unavailable", "error": str(e), "queue": queue}, status=503
        )
    health = request.app[SCHEDULER].health
    if not health.ok:
        return web.json_response(
            {"status": "unavailable", "error": health.why, "engine": engine, "queue": queue},
            status=503,
        )
    return web.json_response({"status": "ok", "engine": engine, "queue": queue})


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(openapi.document())


async def metrics_endpoint(request: web.Request) -> web.Response:
    token = request.app[CONFIG].server.metrics_token
    if token is not None:
        given = secret_from_header(request.headers.get("Authorization")) or ""
        # Header bytes that are not UTF-8 arrive as lone surrogates: compared as the
        # bytes they were, they simply do not match.
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode()):
            return error_response(401, "Unauthorized")
    queue = await request.app[STORE].count_active()
    body = metrics.render(queue["pending"], queue["running"])
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


# -- runners ----------------------------------------------------------------------


async def _runner_or_404(request: web.Request) -> Any:
    runner = await request.app[STORE].get_runner(path_id(request, "runner_id"))
    if runner is None:
        raise web.HTTPNotFound()
    return runner


async def list_runners(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    runners = await request.app[STORE].list_runners()
    return web.json_response({"runners": [contract.runner_json(r, config) for r in runners]})


async def get_runner(request: web.Request) -> web.Response:
    runner = await _runner_or_404(request)
    return web.json_response({"runner": contract.runner_json(runner, request.app[CONFIG])})


async def _check_registry(request: web.Request, fields: dict[str, Any]) -> None:
    registry_id = fields.get("container_registry_id")
    if registry_id is not None and await request.app[STORE].get_registry(registry_id) is None:
        raise contract.Invalid([f"container_registry_id: no container registry {registry_id}"])


async def create_runner(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    fields, env = contract.parse_runner(await read_json(request), config, partial=False)
    await _check_registry(request, fields)
    try:
        runner = await request.app[STORE].create_runner(fields, env or [])
    except Conflict as e:
        raise contract.Invalid([str(e)]) from None
    log.info("runner %s (%s) created", runner.id, runner.name)
    return web.json_response({"runner": contract.runner_json(runner, config)})


async def update_runner(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    runner = await _runner_or_404(request)
    fields, env = contract.parse_runner(await read_json(request), config, partial=True)
    contract.check_command_exclusive(
        fields.get("run_command", runner.run_command), fields.get("argv", runner.argv)
    )
    await _check_registry(request, fields)
    try:
        runner = await request.app[STORE].update_runner(runner.id, fields, env)
    except NotFound:
        raise web.HTTPNotFound() from None
    except Conflict as e:
        raise contract.Invalid([str(e)]) from None
    return web.json_response({"runner": contract.runner_json(runner, config)})


async def delete_runner(request: web.Request) -> web.Response:
    runner_id = path_id(request, "runner_id")
    store = request.app[STORE]
    # Its schedules go with it (the foreign key cascades); the firing loop is told.
    # One made between this read and the delete is gone too, and the loop, finding no
    # row when its time comes, forgets it then.
    schedule_ids = await store.schedule_ids_of_runner(runner_id)
    try:
        deleted = await store.delete_runner(runner_id)
    except NotFound:
        raise web.HTTPNotFound() from None
    except Conflict:
        raise web.HTTPConflict() from None
    for schedule_id in schedule_ids:
        request.app[FIRING].removed(schedule_id)
    request.app[LOGS].delete(deleted.run_ids)
    log.info("runner %s deleted with %d runs", runner_id, len(deleted.run_ids))
    if deleted.unchained:
        log.info(
            "runner %s: no longer chained from %s (their on_success/on_failure named it)",
            runner_id,
            ", ".join(deleted.unchained),
        )
    return web.json_response({"deleted": True})


# -- runner env variables -----------------------------------------------------------


async def list_env(request: web.Request) -> web.Response:
    runner = await _runner_or_404(request)
    tz = request.app[CONFIG].tz
    env = await request.app[STORE].list_env(runner.id)
    return web.json_response({"env_variables": [contract.env_json(e, tz) for e in env]})


async def create_env(request: web.Request) -> web.Response:
    runner = await _runner_or_404(request)
    fields = contract.parse_env_variable(await read_json(request), partial=False)
    try:
        env = await request.app[STORE].create_env(runner.id, fields["env_key"], fields["env_val"])
    except Conflict as e:
        raise contract.Invalid([str(e)]) from None
    return web.json_response({"env_variable": contract.env_json(env, request.app[CONFIG].tz)})


async def update_env(request: web.Request) -> web.Response:
    runner = await _runner_or_404(request)
    env_id = path_id(request, "env_id")
    fields = contract.parse_env_variable(await read_json(request), partial=True)
    try:
        env = await request.app[STORE].update_env(runner.id, env_id, fields)
    except NotFound:
        raise web.HTTPNotFound() from None
    except Conflict as e:
        raise contract.Invalid([str(e)]) from None
    return web.json_response({"env_variable": contract.env_json(env, request.app[CONFIG].tz)})


async def delete_env(request: web.Request) -> web.Response:
    runner = await _runner_or_404(request)
    if not await request.app[STORE].delete_env(runner.id, path_id(request, "env_id")):
        raise web.HTTPNotFound()
    return web.json_response({"deleted": True})


# -- runs ---------------------------------------------------------------------------


async def list_runs(request: web.Request) -> web.Response:
    runner = await _runner_or_404(request)
    q = contract.parse_run_list_query(request.query)
    runs = await request.app[STORE].list_runs(
        runner.id, limit=q.limit, status=q.status, trigger=q.trigger, before=q.before
    )
    if runs is None:
        raise contract.Invalid([f"before: no run {q.before} of this runner"])
    tz = request.app[CONFIG].tz
    return web.json_response({"runs": [contract.run_json(r, tz) for r in runs]})


async def trigger_run(request: web.Request) -> web.Response:
    run = await trigger(
        request,
        path_id(request, "runner_id"),
        await read_json(request),
        request.headers.get("Idempotency-Key"),
    )
    return web.json_response({"run": contract.run_json(run, request.app[CONFIG].tz)})


async def trigger(
    request: web.Request, runner_id: str, body: Any, idempotency_key: str | None
) -> Run:
    """A run of `runner_id` from a trigger body (TriggerRequest's JSON shape): what
    POST …/runs and the dashboard's Trigger run form both do, so validation, the env
    merge, the scheduler's wake-up and the log line are one piece of code. Raises
    HTTPNotFound for an unknown runner, contract.Invalid for a bad body. Reads the
    app's state through `config_dict`: the dashboard's requests belong to its sub-app."""
    store = request.config_dict[STORE]
    config = request.config_dict[CONFIG]
    found = await store.runner_for_run(runner_id)
    if found is None:
        raise web.HTTPNotFound()
    options = contract.parse_trigger(body)
    try:
        prepared = triggers.prepare(found, config, options.env)
    except triggers.NotTriggerable as e:
        raise contract.Invalid([str(e)]) from None
    key = contract.parse_idempotency_key(idempotency_key)
    run, created = await store.create_run(
        prepared.runner,
        prepared.env,
        prepared.cpu,
        prepared.mem,
        prepared.pids,
        idempotency_key=key,
        image=prepared.image,
        not_before=options.not_before,
        timeout_seconds=options.timeout_seconds,
    )
    if created:
        request.config_dict[SCHEDULER].wake()
        # DEBUG: at hundreds of triggers a second a line each is noise (and 8 % of
        # a trigger's CPU); the run's "started" and final lines carry its id.
        log.debug("run %s of runner %s queued", run.id, run.runner_id)
    return run


async def warm_runner(request: web.Request) -> web.Response:
    """Pull the runner's image now (whatever its pull policy); 400 with the pull
    error when that fails."""
    try:
        runner = await request.app[EXECUTOR].warm(path_id(request, "runner_id"))
    except EngineUnavailable:
        raise web.HTTPServiceUnavailable(reason="Docker Engine Unavailable") from None
    except EngineError as e:
        raise contract.Invalid([f"image_name: {e}"]) from None
    if runner is None:
        raise web.HTTPNotFound()
    return web.json_response({"runner": contract.runner_json(runner, request.app[CONFIG])})


# -- schedules ------------------------------------------------------------------------


async def list_schedules(request: web.Request) -> web.Response:
    runner = await _runner_or_404(request)
    tz = request.app[CONFIG].tz
    schedules = await request.app[STORE].list_schedules(runner.id)
    return web.json_response({"schedules": [contract.schedule_json(s, tz) for s in schedules]})


async def get_schedule(request: web.Request) -> web.Response:
    runner_id, schedule_id = path_id(request, "runner_id"), path_id(request, "schedule_id")
    schedule = await request.app[STORE].get_schedule(runner_id, schedule_id)
    if schedule is None:
        raise web.HTTPNotFound()
    return web.json_response({"schedule": contract.schedule_json(schedule, request.app[CONFIG].tz)})


async def create_schedule(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    runner_id = (await _runner_or_404(request)).id
    fields = contract.parse_schedule(await read_json(request), config, partial=False)
    try:
        schedule = await request.app[STORE].create_schedule(runner_id, fields)
    except NotFound:
        raise web.HTTPNotFound() from None
    request.app[FIRING].changed(schedule)
    log.info("schedule %s (%s) of runner %s created", schedule.id, schedule.cron, runner_id)
    return web.json_response({"schedule": contract.schedule_json(schedule, config.tz)})


async def update_schedule(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    runner_id, schedule_id = path_id(request, "runner_id"), path_id(request, "schedule_id")
    fields = contract.parse_schedule(await read_json(request), config, partial=True)
    try:
        schedule = await request.app[STORE].update_schedule(runner_id, schedule_id, fields)
    except NotFound:
        raise web.HTTPNotFound() from None
    request.app[FIRING].changed(schedule)
    return web.json_response({"schedule": contract.schedule_json(schedule, config.tz)})


async def delete_schedule(request: web.Request) -> web.Response:
    runner_id, schedule_id = path_id(request, "runner_id"), path_id(request, "schedule_id")
    if not await request.app[STORE].delete_schedule(runner_id, schedule_id):
        raise web.HTTPNotFound()
    request.app[FIRING].removed(schedule_id)
    log.info("schedule %s of runner %s deleted", schedule_id, runner_id)
    return web.json_response({"deleted": True})


# -- container registries -------------------------------------------------------------


async def _registry_or_404(request: web.Request) -> Any:
    registry = await request.app[STORE].get_registry(path_id(request, "registry_id"))
    if registry is None:
        raise web.HTTPNotFound()
    return registry


async def list_registries(request: web.Request) -> web.Response:
    tz = request.app[CONFIG].tz
    registries = await request.app[STORE].list_registries()
    return web.json_response(
        {"container_registries": [contract.registry_json(r, tz) for r in registries]}
    )


async def get_registry(request: web.Request) -> web.Response:
    registry = await _registry_or_404(request)
    return web.json_response(
        {"container_registry": contract.registry_json(registry, request.app[CONFIG].tz)}
    )


async def create_registry(request: web.Request) -> web.Response:
    fields = contract.parse_registry(await read_json(request), partial=False)
    try:
        registry = await request.app[STORE].create_registry(fields)
    except Conflict as e:
        raise contract.Invalid([str(e)]) from None
    log.info("container registry %s (%s) created", registry.id, registry.host)
    return web.json_response(
        {"container_registry": contract.registry_json(registry, request.app[CONFIG].tz)}
    )


async def update_registry(request: web.Request) -> web.Response:
    registry = await _registry_or_404(request)
    fields = contract.parse_registry(await read_json(request), partial=True)
    try:
        registry = await request.app[STORE].update_registry(registry.id, fields)
    except NotFound:
        raise web.HTTPNotFound() from None
    except Conflict as e:
        raise contract.Invalid([str(e)]) from None
    return web.json_response(
        {"container_registry": contract.registry_json(registry, request.app[CONFIG].tz)}
    )


async def delete_registry(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].delete_registry(path_id(request, "registry_id"))
    except NotFound:
        raise web.HTTPNotFound() from None
    except Conflict:
        raise web.HTTPConflict() from None
    return web.json_response({"deleted": True})


async def cancel_run(request: web.Request) -> web.Response:
    run = await cancel(request, await run_or_404(request))
    return web.json_response({"run": contract.run_json(run, request.config_dict[CONFIG].tz)})


async def cancel(request: web.Request, run: Run) -> Run:
    """Cancel `run`; the run as it is after. The one cancel both POST /v1/…/cancel
    and the dashboard's Cancel run button use.

    Pending: failed/canceled at once, never started. Running: its container is
    stopped, then failed/canceled with the exit code it ended with. Either way it is
    never retried. Failed, with a retry still pending (its latest attempt): that retry
    is canceled, and the answer is the run asked for, unchanged. Cancelling a
    canceled run (or one whose retry was canceled) again answers as the first time;
    any other ended run → 409; one between the store and the engine → 503."""
    store = request.config_dict[STORE]
    config = request.config_dict[CONFIG]
    scheduler = request.config_dict[SCHEDULER]
    if run.status is Status.PENDING:
        canceled = await store.cancel_pending(run.id, "The run was canceled before it started.")
        if canceled is not None:
            log.info("run %s canceled while pending", run.id)
            # If it was being started (pulling, creating), that stops now.
            await scheduler.cancel(run.id, canceled.error or "", wait_seconds=0)
            return canceled
        run = await _reread(request, run)  # it started meanwhile
    if run.status is Status.RUNNING:
        grace = config.docker.stop_grace_seconds
        try:
            stopped = await scheduler.cancel(
                run.id, "The run was canceled.", wait_seconds=grace + 15
            )
        except EngineError:
            raise web.HTTPServiceUnavailable(
                reason="Docker Engine Unavailable, Retry Cancel"
            ) from None
        if not stopped:
            # Between the store and the engine (starting, or re-attaching after a
            # restart) for a moment: nothing was changed, the client may retry.
            raise web.HTTPServiceUnavailable(reason="Run Is Starting, Retry Cancel")
        log.info("run %s canceled while running", run.id)
        run = await _reread(request, run)
    if run.status is Status.FAILED and run.failure_reason is FailureReason.CANCELED:
        return run
    if run.status is Status.FAILED and await _cancel_retry(request, run):
        return run
    if run.status in TERMINAL_STATUSES:
        raise web.HTTPConflict()
    return run


async def _reread(request: web.Request, run: Run) -> Run:
    current = await request.config_dict[STORE].get_run(run.id, run.runner_id)
    if current is None:
        raise web.HTTPNotFound()  # deleted meanwhile, with its runner
    return current


async def _cancel_retry(request: web.Request, run: Run) -> bool:
    """Cancel the pending retry of the failed `run` (its latest attempt); True when
    that retry is canceled now or already was, False when it has none or it started."""
    latest = await request.config_dict[STORE].latest_retry(run.id)
    if latest is None:
        return False
    if latest.status is Status.PENDING:
        why = (
            "The run was canceled before it started "
            f"(by canceling attempt {run.attempt}, run {run.id})."
        )
        canceled = await request.config_dict[STORE].cancel_pending(latest.id, why)
        if canceled is not None:
            log.info(
                "run %s: its retry %s (attempt %d) canceled", run.id, latest.id, latest.attempt
            )
            await request.config_dict[SCHEDULER].cancel(latest.id, why, wait_seconds=0)
            return True
        latest = (
            await request.config_dict[STORE].get_run(latest.id) or latest
        )  # it started meanwhile
    return latest.status is Status.FAILED and latest.failure_reason is FailureReason.CANCELED


async def get_run(request: web.Request) -> web.Response:
    run = await run_or_404(request)
    return web.json_response({"run": contract.run_json(run, request.app[CONFIG].tz)})


async def run_or_404(request: web.Request, runner: str = "runner_id", run: str = "run_id") -> Run:
    """The run of the path's runner and run ids (the route's names for them); 404
    when there is none."""
    found = await request.config_dict[STORE].get_run(
        path_id(request, run), path_id(request, runner)
    )
    if found is None:
        raise web.HTTPNotFound()
    return found


async def run_logs(request: web.Request) -> web.StreamResponse:
    """The run's output: text/plain (optionally `follow`ing it live), Server-Sent
    Events (`Accept: text/event-stream`, always live) or a JSON page."""
    run = await run_or_404(request)
    accept = request.headers.get("Accept", "")
    if "text/event-stream" in accept:
        return await _logs_sse(request, run)
    if "application/json" in accept and "text/plain" not in accept:
        return await _logs_json(request, run)
    tail, follow = contract.parse_text_logs_query(request.query)
    logs = request.app[LOGS]
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    if follow:
        with request.app[FOLLOWERS].slot() as admitted:
            if not admitted:
                return request.app[FOLLOWERS].refusal()
            offset, skip = (
                await logs.reading(logs.tail_start, run.id, tail) if tail is not None else (0, 0)
            )

            async def emit(records: list[Record]) -> None:
                nonlocal skip
                data = b"".join(r.data for r in records)
                await _send(request, response, data[skip:])
                skip = 0

            await response.prepare(request)
            await _follow(request, run, offset, emit)
            return await _end(request, response)
    return await send_text_log(request, run, response, tail)


async def send_text_log(
    request: web.Request, run: Run, response: web.StreamResponse, tail: int | None = None
) -> web.StreamResponse:
    """The run's output written so far, as the container wrote it (its last `tail`
    lines only, if given), on `response`: the API's text/plain logs and the
    dashboard's raw download."""
    await response.prepare(request)
    # File reads happen in the log read pool: a big log never stalls other requests.
    async with contextlib.aclosing(request.config_dict[LOGS].text_chunks(run.id, tail)) as chunks:
        async for chunk in chunks:
            await _send(request, response, chunk)
    await response.write_eof()
    return response


async def _logs_json(request: web.Request, run: Run) -> web.Response:
    page = contract.parse_json_logs_query(request.query)
    logs = request.app[LOGS]
    after = await _cursor(logs, run.id, page.after, "after")
    if page.before is not None:
        await _cursor(logs, run.id, page.before, "before")
    records = await logs.reading(
        logs.page, run.id, limit=page.limit, after=after, before=page.before, stream=page.stream
    )
    tz = request.app[CONFIG].tz
    return web.json_response(
        {
            "logs": [
                contract.log_entry_json(r.offset, r.stream, r.ts_ns, r.data, tz) for r in records
            ]
        }
    )


async def _logs_sse(request: web.Request, run: Run) -> web.StreamResponse:
    cursor, stream = contract.parse_sse_logs_query(
        request.query, request.headers.get("Last-Event-ID")
    )
    return await logs_sse(request, run, cursor, "Last-Event-ID", stream)


async def logs_sse(
    request: web.Request, run: Run, cursor: int | None, cursor_name: str, stream: int | None
) -> web.StreamResponse:
    """The run's log as Server-Sent Events from after the entry `cursor` (from its
    start without one; a 400 naming `cursor_name` when it is not an entry of this
    log), live until the run ends, within the followers' limit: the API's and the
    dashboard's live log."""
    logs = request.config_dict[LOGS]
    offset = await _cursor(logs, run.id, cursor, cursor_name) or 0
    followers = request.config_dict[FOLLOWERS]
    with followers.slot() as admitted:
        if not admitted:
            return followers.refusal()
        return await _stream_sse(request, run, offset, stream)


async def _stream_sse(
    request: web.Request, run: Run, offset: int, stream: int | None
) -> web.StreamResponse:
    tz = request.config_dict[CONFIG].tz
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)

    async def emit(records: list[Record]) -> None:
        events = []
        for r in records:
            if (
                stream is not None
                and contract.LOG_STREAMS.get(contract.LOG_STREAM_NAMES.get(r.stream, "")) != stream
            ):
                continue
            entry = contract.log_entry_json(r.offset, r.stream, r.ts_ns, r.data, tz)
            events.append(
                f"id: {r.offset}\nevent: log\ndata: "
                f"{json.dumps({k: entry[k] for k in ('ts', 'stream', 'msg')})}\n\n"
            )
        if events:
            await _send(request, response, "".join(events).encode())

    final = await _follow(request, run, offset, emit)
    if final is not None:
        await _send(
            request,
            response,
            ("event: end\ndata: " + json.dumps(contract.run_json(final, tz)) + "\n\n").encode(),
        )
    return await _end(request, response)


async def _cursor(logs: LogStore, run_id: str, cursor: int | None, name: str) -> int | None:
    """Where reading goes on after the entry `cursor`; 400 when it is not one."""
    if cursor is None:
        return None
    try:
        return await logs.reading(logs.after, run_id, cursor)
    except ValueError:
        raise contract.Invalid([f"{name}: {cursor} is not a log entry id of this run"]) from None


class Followers:
    """Counts the live log streams (follow, SSE): each holds a connection, a task and
    reads in the log read pool, so past `[server] max_log_followers` more are refused."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._refusing = False  # logged once per stretch at the limit

    @contextlib.contextmanager
    def slot(self) -> Iterator[bool]:
        """True (and a slot held until the block ends) when under the limit."""
        if self.count >= self.limit:
            if not self._refusing:
                self._refusing = True
                log.warning(
                    "%d log followers stream at once, the most [server] "
                    "max_log_followers allows; refusing more with 503",
                    self.limit,
                )
            yield False
            return
        self.count += 1
        try:
            yield True
        finally:
            self.count -= 1
            if self.count < self.limit:
                self._refusing = False

    def refusal(self) -> web.Response:
        response = error_response(
            503,
            f"Too many log followers: {self.limit} live log streams are open, the most "
            "[server] max_log_followers allows; retry later",
        )
        response.headers["Retry-After"] = "5"
        return response


FOLLOWERS = web.AppKey("followers", Followers)


async def _follow(
    request: web.Request, run: Run, offset: int, emit: Callable[[list[Record]], Awaitable[None]]
) -> Run | None:
    """Hand every record from `offset` to `emit` as it is written, until the run
    has completed and all its output is out (→ the final Run), or the daemon stops
    or the client has gone (→ None). Waits on the writer's notifications, not on a
    timer."""
    logs = request.config_dict[LOGS]
    store = request.config_dict[STORE]
    stopping = request.config_dict[STOPPING]
    completed: Run | None = None
    cuts, _ = logs.cuts(run.id)
    while True:
        changed = logs.changed(run.id)
        try:
            if logs.cuts(run.id)[0] != cuts:
                # The log was repaired from the engine's copy (Podman): what this
                # stream sent past the cut is not in the log any more; it goes on
                # with what replaced it.
                cuts, at = logs.cuts(run.id)
                offset = min(offset, at)
            records, offset = await logs.reading(logs.read, run.id, offset)
            if records:
                await emit(records)
                continue
            if completed is not None:
                return completed  # completed, and read to the end after that
            current = await store.get_run(run.id)
            if current is None or current.status in TERMINAL_STATUSES:
                completed = current or run
                continue  # one more read: output written just before it completed
            if stopping.is_set():
                return None
            if request.transport is None or request.transport.is_closing():
                # The client left (aiohttp does not cancel the handler): free its
                # follower slot instead of waiting for output that nobody reads.
                return None
            stop_wait = asyncio.ensure_future(stopping.wait())
            wake_ups: set[asyncio.Future[Any]] = {changed, stop_wait}
            try:
                await asyncio.wait(
                    wake_ups,
                    timeout=FOLLOW_RECHECK_SECONDS,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                stop_wait.cancel()
        finally:
            changed.cancel()


async def _end(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """End a live stream, unless its client has gone: there is no one to tell."""
    if request.transport is not None and not request.transport.is_closing():
        try:
            await response.write_eof()
        except ConnectionResetError:
            pass
    return response


async def _send(request: web.Request, response: web.StreamResponse, data: bytes) -> None:
    """Write, or drop a client that does not read: nothing is buffered without bound."""
    if not data:
        return
    try:
        await asyncio.wait_for(response.write(data), SLOW_CLIENT_SECONDS)
    except TimeoutError:
        log.info("dropping a client that stopped reading %s", request.path)
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError("client stopped reading") from None
