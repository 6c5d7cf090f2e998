"""The client's subcommands, and `run`, their entry point: each command is a
coroutine taking the connection and the parsed arguments and returning the exit
code; `run` turns every failure into a one-line message and an exit code."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from ..contract import ENV_KEY, RUN_AT_AHEAD_MAX_MS, is_uuid
from ..models import TERMINAL_STATUSES
from . import render
from .errors import (
    EXIT_CANCELED,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    FAILURE_EXIT_CODES,
    ApiError,
    CliError,
)
from .http import DEFAULT_URL, Client, run_path

TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)
POLL_SECONDS = 0.5  # status/log polling where the daemon cannot push
CANCEL_RETRY_SECONDS = 15.0  # how long `runs cancel` retries a 503 (run starting)
RESUME_WINDOW = 64 * 1024  # bytes of printed output kept to find our place again


# -- entry point --------------------------------------------------------------------------


Command = Callable[[Client, argparse.Namespace], Awaitable[int]]


def run(args: argparse.Namespace) -> int:
    """Run the client command `args.command` and map every failure to an exit code."""
    url = (args.url or os.environ.get("RUNNERD_URL") or DEFAULT_URL).strip()
    token = args.token if args.token is not None else os.environ.get("RUNNERD_TOKEN", "")
    token = token.strip()
    if not token:
        return render.fail(
            CliError(
                "no API token: pass --token KEY or set RUNNERD_TOKEN "
                "(make a key on the daemon's host with: runnerd keys create "
                "--name NAME)",
                code=EXIT_USAGE,
            )
        )
    if not re.match(r"https?://[^/\s]+", url):
        return render.fail(
            CliError(f"--url must be an http:// or https:// URL, got {url!r}", code=EXIT_USAGE)
        )
    if any(ord(c) < 33 or ord(c) > 126 for c in token):
        return render.fail(
            CliError(
                "the API token must be visible ASCII characters without spaces", code=EXIT_USAGE
            )
        )
    client = Client(url, token)
    command: Command = args.command

    async def main() -> int:
        async with client:
            return await command(client, args)

    try:
        return asyncio.run(main())
    except CliError as e:
        return render.fail(e)
    except aiohttp.ClientConnectorError as e:
        errno = getattr(e.os_error, "errno", None)
        why = (
            os.strerror(errno)
            if isinstance(errno, int) and errno > 0
            else getattr(e.os_error, "strerror", None) or str(e.os_error or e)
        )
        return render.fail(
            CliError(f"cannot reach the daemon at {client.url}: {why}", *_watch_hint(client))
        )
    except (
        aiohttp.ServerDisconnectedError,
        aiohttp.ClientPayloadError,
        aiohttp.ClientOSError,
    ) as e:
        return render.fail(
            CliError(
                f"lost the connection to the daemon at {client.url}: {e or type(e).__name__}",
                *_watch_hint(client),
            )
        )
    except aiohttp.InvalidURL as e:
        return render.fail(CliError(f"--url {url!r} is not a valid URL ({e})", code=EXIT_USAGE))
    except TimeoutError:
        return render.fail(CliError(f"the daemon at {client.url} did not answer in time"))
    except aiohttp.ClientError as e:
        return render.fail(
            CliError(f"request to the daemon at {client.url} failed: {e or type(e).__name__}")
        )
    except KeyboardInterrupt:
        return render.fail(CliError("interrupted", *_watch_hint(client), code=EXIT_CANCELED))
    except BrokenPipeError:
        # stdout was closed early (e.g. `| head`): quietly, as other tools do
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_ERROR


def _watch_hint(client: Client) -> list[str]:
    if client.watching is None:
        return []
    runner, run_id = client.watching
    return [
        f"run {run_id} goes on; follow it with: runnerd logs {runner} {run_id} -f, "
        f"or cancel it with: runnerd runs cancel {runner} {run_id}"
    ]


# -- argument helpers ------------------------------------------------------------------


def key_val(text: str) -> tuple[str, str]:
    """argparse type of `-e KEY=VAL`: the key is checked by the daemon."""
    key, sep, val = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VAL, got {text!r}")
    return key, val


_RELATIVE = re.compile(r"\+((?:[0-9]+[smhd])+)\Z")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def run_at(text: str) -> str:
    """argparse type of `runs trigger --at`: a time in the API's format, passed on
    for the daemon to check, or `+90s`, `+10m`, `+2h`, `+1d`, `+1h30m` from now, made
    into one (in this machine's zone)."""
    if not text.startswith("+"):
        return text
    match = _RELATIVE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a time such as 2026-01-15T22:00:00+01:00, or a wait from now such "
            f"as +90s, +10m, +2h or +1h30m, got {text!r}"
        )
    seconds = sum(
        int(n) * _UNIT_SECONDS[unit] for n, unit in re.findall(r"([0-9]+)([smhd])", match[1])
    )
    if seconds * 1000 > RUN_AT_AHEAD_MAX_MS:  # the daemon's limit (and datetime's range)
        raise argparse.ArgumentTypeError(
            f"must be at most a year ({RUN_AT_AHEAD_MAX_MS // 86_400_000} days) from now, "
            f"got {text!r}"
        )
    at = datetime.now().astimezone() + timedelta(seconds=seconds)
    return at.isoformat(timespec="milliseconds")


def _env_body(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"env_key": k, "env_val": v} for k, v in pairs]


def _split_image(image: str) -> tuple[str, str | None]:
    """`busybox:1.36` → (`busybox`, `1.36`); a registry port is not a tag."""
    name, sep, tag = image.rpartition(":")
    if sep and name and tag and "/" not in tag and "@" not in image:
        return name, tag
    return image, None


def _runner_body(args: argparse.Namespace, *, create: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.name is not None:
        body["name"] = args.name
    if args.image is not None:
        name, tag = _split_image(args.image)
        if tag is not None and args.tag is not None:
            raise CliError(
                f"--image {args.image!r} has a tag and --tag is given too: give the tag once",
                code=EXIT_USAGE,
            )
        body["image_name"] = name
        if tag is not None:
            body["image_tag"] = tag
    if args.tag is not None:
        body["image_tag"] = args.tag
    if args.command_line is not None:
        body["run_command"] = args.command_line
        if not create:
            body["argv"] = None  # the two exclude each other: switching clears the other
    if args.argv_json is not None:
        try:
            body["argv"] = json.loads(args.argv_json)
        except ValueError as e:
            raise CliError(f"--argv-json is not valid JSON: {e}", code=EXIT_USAGE) from None
        if not create:
            body["run_command"] = None
    if args.entrypoint is not None:
        body["entrypoint"] = args.entrypoint
    if args.timeout is not None:
        body["timeout_seconds"] = args.timeout
    if args.instance_type is not None:
        body["instance_type"] = args.instance_type
    if args.max_concurrent_runs is not None:
        body["max_concurrent_runs"] = (
            None if args.max_concurrent_runs == NO_LIMIT else args.max_concurrent_runs
        )
    if args.registry is not None:
        body["container_registry_id"] = None if args.registry == "none" else args.registry
    if args.pull_policy is not None:
        body["image_pull_policy"] = args.pull_policy
    if args.webhook_url is not None:
        body["webhook_url"] = None if args.webhook_url == "none" else args.webhook_url
    if args.env:
        body["env_variables"] = _env_body(args.env)
    return body


async def _retry_and_chain_body(
    c: Client, args: argparse.Namespace, current: dict[str, Any] | None
) -> dict[str, Any]:
    """`retry_policy`, `on_success` and `on_failure` from the retry and chain options.
    The API replaces a whole policy, so on update the options given change the
    runner's `current` policy and the rest of it is kept. Chained runners may be
    given by name: each is looked up to its id."""
    body: dict[str, Any] = {}
    policy = {
        key: value
        for key, value in (
            ("max_retries", args.max_retries),
            ("backoff_seconds", args.backoff),
            ("backoff_max_seconds", args.backoff_max),
            ("retry_on", args.retry_on),
            ("retry_exit_codes", args.retry_exit_codes),
        )
        if value is not None
    }
    if args.no_retries:
        if policy:
            raise CliError(
                "--no-retries cannot be combined with the other retry options", code=EXIT_USAGE
            )
        body["retry_policy"] = None
    elif policy:
        policy = {**((current or {}).get("retry_policy") or {}), **policy}
        if policy.get("retry_exit_codes") is ANY_EXIT_CODE:
            policy["retry_exit_codes"] = None
        body["retry_policy"] = policy
    for field in ("on_success", "on_failure"):
        refs = getattr(args, field)
        if refs is not None:
            body[field] = [(await c.runner(ref))["id"] for ref in refs]
    return body


ANY_EXIT_CODE: list[int] = []  # `--retry-exit-codes any`: null, every non-zero code


def comma_list(text: str) -> list[str]:
    """argparse type of `--retry-on`, `--on-success`, `--on-failure`: comma-separated
    items; an empty string is the empty list (it clears)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def exit_codes(text: str) -> list[int]:
    """argparse type of `--retry-exit-codes`: `1,2`, or `any` (ANY_EXIT_CODE)."""
    if text.strip().lower() in ("any", "none", "null"):
        return ANY_EXIT_CODE
    try:
        return [int(code) for code in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected exit codes like 1,2 or 'any', got {text!r}"
        ) from None


NO_LIMIT = "none"  # `--max-concurrent-runs none`; not None, which is "not given"


def max_runs(text: str) -> int | str:
    """argparse type of `--max-concurrent-runs`: a number, or NO_LIMIT for `none`."""
    if text.lower() in ("none", "null", "unlimited"):
        return NO_LIMIT
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


# -- runners ------------------------------------------------------------------------------


async def runners_list(c: Client, args: argparse.Namespace) -> int:
    data = await c.request("GET", "/v1/runners")
    if args.json:
        render.print_json(data)
        return EXIT_OK
    runners = data["runners"]
    if not runners:
        print("no runners; create one with: runnerd runners create --name NAME --image IMAGE")
        return EXIT_OK
    render.table(
        ["NAME", "ID", "IMAGE", "INSTANCE TYPE", "TIMEOUT"],
        [
            [
                render.cell(r["name"]),
                r["id"],
                f"{r['image_name']}:{r['image_tag']}",
                render.cell((r.get("instance_type") or {}).get("slug")),
                f"{r['timeout_seconds']}s",
            ]
            for r in runners
        ],
    )
    return EXIT_OK


async def runners_show(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    if args.json:
        render.print_json({"runner": runner})
    else:
        render.show(runner)
    return EXIT_OK


async def runners_create(c: Client, args: argparse.Namespace) -> int:
    body = _runner_body(args, create=True) | await _retry_and_chain_body(c, args, None)
    data = await c.request("POST", "/v1/runners", body=body)
    if args.json:
        render.print_json(data)
    else:
        render.show(data["runner"])
    return EXIT_OK


async def runners_update(c: Client, args: argparse.Namespace) -> int:
    body = _runner_body(args, create=False)
    retry_or_chain = any(
        getattr(args, option) is not None
        for option in (
            "max_retries",
            "backoff",
            "backoff_max",
            "retry_on",
            "retry_exit_codes",
            "on_success",
            "on_failure",
        )
    )
    if not body and not retry_or_chain and not args.no_retries:
        raise CliError(
            "nothing to update: give at least one option (see: runnerd runners update --help)",
            code=EXIT_USAGE,
        )
    runner = await c.runner(args.runner)
    body |= await _retry_and_chain_body(c, args, runner)
    data = await c.request("PATCH", f"/v1/runners/{runner['id']}", body=body)
    if args.json:
        render.print_json(data)
    else:
        render.show(data["runner"])
    return EXIT_OK


async def runners_warm(c: Client, args: argparse.Namespace) -> int:
    """Pull the runner's image now; a progress bar on stderr while the daemon pulls."""
    runner = await c.runner(args.runner)
    request = asyncio.ensure_future(
        c.request(
            "POST",
            f"/v1/runners/{runner['id']}/warm",
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        )
    )
    show = sys.stderr.isatty() and not args.json
    started = time.monotonic()
    try:
        while not request.done():
            if show:
                elapsed = time.monotonic() - started
                pos = int(elapsed * 8) % 20
                bar = "".join("=" if pos <= i < pos + 5 else " " for i in range(24))
                sys.stderr.write(
                    f"\rpulling {runner['image_name']}:{runner['image_tag']} "
                    f"[{bar}] {elapsed:5.1f}s"
                )
                sys.stderr.flush()
            await asyncio.wait({request}, timeout=0.125)
    finally:
        if show:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        if not request.done():
            request.cancel()
    data = request.result()
    if args.json:
        render.print_json(data)
    else:
        print(f"warmed runner {runner['name']}: image pulled in {time.monotonic() - started:.1f} s")
    return EXIT_OK


async def runners_delete(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    try:
        data = await c.request("DELETE", f"/v1/runners/{runner['id']}")
    except ApiError as e:
        if e.status == 409:
            e.lines.append(
                "the runner has pending or running runs: wait for them, or "
                f"cancel them (runnerd runs list {runner['name']} --status running)"
            )
        raise
    if args.json:
        render.print_json(data)
    else:
        print(f"deleted runner {runner['name']} ({runner['id']}) with its runs and logs")
    return EXIT_OK


# -- env variables --------------------------------------------------------------------------


async def _env(c: Client, runner: dict[str, Any]) -> list[dict[str, Any]]:
    data = await c.request("GET", f"/v1/runners/{runner['id']}/env_variables")
    return list(data["env_variables"])


async def env_list(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    env = await _env(c, runner)
    if args.json:
        render.print_json({"env_variables": env})
    elif not env:
        print(
            f"runner {runner['name']} has no env variables; set one with: "
            f"runnerd env set {runner['name']} KEY=VAL"
        )
    else:
        render.table(["KEY", "VALUE"], [[e["env_key"], render.cell(e["env_val"])] for e in env])
    return EXIT_OK


async def env_set(c: Client, args: argparse.Namespace) -> int:
    pairs: dict[str, str] = {}
    for key, val in args.pairs:
        if not ENV_KEY.match(key):  # checked up front so that nothing is half applied
            raise CliError(
                f"{key!r} is not a valid env key: use letters, digits and '_', "
                "not starting with a digit",
                code=EXIT_USAGE,
            )
        pairs[key] = val  # the last one given wins
    runner = await c.runner(args.runner)
    existing = {e["env_key"]: e for e in await _env(c, runner)}
    changed = []
    base = f"/v1/runners/{runner['id']}/env_variables"
    for key, val in pairs.items():
        if key in existing:
            data = await c.request("PATCH", f"{base}/{existing[key]['id']}", body={"env_val": val})
            verb = "updated"
        else:
            data = await c.request("POST", base, body={"env_key": key, "env_val": val})
            verb = "created"
        changed.append(data["env_variable"])
        if not args.json:
            print(f"{verb} {key}")
    if args.json:
        render.print_json({"env_variables": changed})
    return EXIT_OK


async def env_unset(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    existing = {e["env_key"]: e for e in await _env(c, runner)}
    missing = [k for k in args.keys if k not in existing]
    if missing:  # checked up front so that nothing is half applied
        raise CliError(*[f"runner {runner['name']!r} has no env variable {k!r}" for k in missing])
    deleted = []
    for key in dict.fromkeys(args.keys):
        await c.request("DELETE", f"/v1/runners/{runner['id']}/env_variables/{existing[key]['id']}")
        deleted.append(key)
        if not args.json:
            print(f"deleted {key}")
    if args.json:
        render.print_json({"deleted": True, "env_keys": deleted})
    return EXIT_OK


# -- runs -----------------------------------------------------------------------------------


async def runs_list(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    params = {
        k: str(v)
        for k, v in (("status", args.status), ("limit", args.limit), ("before", args.before))
        if v is not None
    }
    data = await c.request("GET", f"/v1/runners/{runner['id']}/runs", params=params)
    if args.json:
        render.print_json(data)
    elif not data["runs"]:
        print(
            f"no runs of runner {runner['name']}"
            + (f" with status {args.status}" if args.status else "")
        )
    else:
        render.table(*render.run_table(data["runs"]))
    return EXIT_OK


async def runs_show(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    run_ = await c.run(runner, args.run)
    if args.json:
        render.print_json({"run": run_})
    else:
        render.show(run_)
        render.warn_log_incomplete(run_)
    return EXIT_OK


async def runs_trigger(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    body: dict[str, Any] = {}
    if args.env:
        body["env_variables"] = _env_body(args.env)
    if args.at is not None:
        body["run_at"] = args.at
    if args.timeout is not None:
        body["timeout_seconds"] = args.timeout
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    data = await c.request(
        "POST", f"/v1/runners/{runner['id']}/runs", body=body or None, headers=headers
    )
    run_ = data["run"]
    if not args.wait:
        if args.json:
            render.print_json(data)
        else:
            render.show(run_)
        return EXIT_OK
    c.watching = (runner["name"], run_["id"])
    if args.json:  # no log on stdout: it holds the final run, for a script to parse
        final = await _poll_until_done(c, runner, run_["id"])
        render.print_json({"run": final})
    else:
        final = await follow_logs(c, runner, run_["id"])
        render.warn_log_incomplete(final)
    c.watching = None
    return _report(final)


async def runs_cancel(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    path = run_path(runner, args.run) + "/cancel"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CANCEL_RETRY_SECONDS
    while True:
        try:
            data = await c.request("POST", path)
            break
        except ApiError as e:
            if e.status == 503 and loop.time() < deadline:
                await asyncio.sleep(1.0)  # the run is starting or being re-attached
                continue
            if e.status == 404:
                raise CliError(f"runner {runner['name']!r} has no run {args.run!r}") from None
            if e.status == 409:
                e.lines.append("the run has already ended; it can no longer be canceled")
            raise
    if args.json:
        render.print_json(data)
    else:
        render.show(data["run"])
    return EXIT_OK


def _report(run_: dict[str, Any]) -> int:
    """The exit code for a finished run, and why on stderr when it failed."""
    if run_.get("status") == "succeeded":
        return EXIT_OK
    reason = run_.get("failure_reason")
    why = run_.get("error") or "no reason given"
    print(
        f"runnerd: run {run_['id']} failed ({reason or run_.get('status')}): {why}", file=sys.stderr
    )
    if reason in FAILURE_EXIT_CODES:
        return FAILURE_EXIT_CODES[reason]
    code = run_.get("exit_code")
    if isinstance(code, int) and 1 <= code <= 255:
        return code
    return EXIT_ERROR


async def _poll_until_done(c: Client, runner: dict[str, Any], run_id: str) -> dict[str, Any]:
    while True:
        run_ = await c.run(runner, run_id)
        if run_["status"] in TERMINAL:
            return run_
        await asyncio.sleep(POLL_SECONDS)


# -- schedules ------------------------------------------------------------------------------


def _schedule_body(args: argparse.Namespace) -> dict[str, Any]:
    """The fields given on the command line: on update, only those."""
    body: dict[str, Any] = {}
    if args.cron is not None:
        body["cron"] = args.cron
    if args.timezone is not None:
        body["timezone"] = args.timezone
    if args.enabled is not None:
        body["enabled"] = args.enabled
    if args.env:
        body["env_variables"] = _env_body(args.env)
    elif getattr(args, "clear_env", False):
        body["env_variables"] = []
    if args.concurrency_policy is not None:
        body["concurrency_policy"] = args.concurrency_policy
    if args.starting_deadline is not None:
        body["starting_deadline_seconds"] = args.starting_deadline
    return body


def _schedule_path(runner: dict[str, Any], schedule_id: str | None = None) -> str:
    path = f"/v1/runners/{runner['id']}/schedules"
    return path if schedule_id is None else f"{path}/{schedule_id.lower()}"


async def _schedule_request(
    c: Client, runner: dict[str, Any], method: str, schedule_id: str, body: Any = None
) -> dict[str, Any]:
    """`method` on one schedule of the runner; a clean message for an unknown one."""
    if not is_uuid(schedule_id):  # nor a path of its own, such as `../runs`
        raise CliError(
            f"{schedule_id!r} is not a schedule id: ids are UUIDs "
            f"(see: runnerd schedules list {runner['name']})",
            code=EXIT_USAGE,
        )
    try:
        data: dict[str, Any] = await c.request(
            method, _schedule_path(runner, schedule_id), body=body
        )
    except ApiError as e:
        if e.status == 404:
            raise CliError(
                f"runner {runner['name']!r} has no schedule {schedule_id!r} "
                f"(see: runnerd schedules list {runner['name']})"
            ) from None
        raise
    return data


def _print_schedule(args: argparse.Namespace, data: dict[str, Any]) -> None:
    if args.json:
        render.print_json(data)
    else:
        render.show(data["schedule"])


async def schedules_list(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    data = await c.request("GET", _schedule_path(runner))
    if args.json:
        render.print_json(data)
    elif not data["schedules"]:
        print(
            f"runner {runner['name']} has no schedules; add one with: "
            f"runnerd schedules create {runner['name']} --cron EXPR"
        )
    else:
        render.table(
            ["ID", "CRON", "TIMEZONE", "ENABLED", "NEXT RUN", "LAST RUN", "MISSED"],
            [render.schedule_row(s) for s in data["schedules"]],
        )
    return EXIT_OK


async def schedules_create(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    data = await c.request("POST", _schedule_path(runner), body=_schedule_body(args))
    _print_schedule(args, data)
    return EXIT_OK


async def schedules_update(c: Client, args: argparse.Namespace) -> int:
    body = _schedule_body(args)
    if not body:
        raise CliError(
            "nothing to update: give at least one option (see: runnerd schedules update --help)",
            code=EXIT_USAGE,
        )
    runner = await c.runner(args.runner)
    _print_schedule(args, await _schedule_request(c, runner, "PATCH", args.schedule, body))
    return EXIT_OK


async def schedules_pause(c: Client, args: argparse.Namespace) -> int:
    """PATCH enabled: false. It fires no more until resumed."""
    runner = await c.runner(args.runner)
    body = {"enabled": False}
    _print_schedule(args, await _schedule_request(c, runner, "PATCH", args.schedule, body))
    return EXIT_OK


async def schedules_resume(c: Client, args: argparse.Namespace) -> int:
    """PATCH enabled: true. It fires next at its first slot from now on: the slots that
    passed while it was paused are not made up."""
    runner = await c.runner(args.runner)
    body = {"enabled": True}
    _print_schedule(args, await _schedule_request(c, runner, "PATCH", args.schedule, body))
    return EXIT_OK


async def schedules_delete(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    data = await _schedule_request(c, runner, "DELETE", args.schedule)
    if args.json:
        render.print_json(data)
    else:
        print(f"deleted schedule {args.schedule.lower()} of runner {runner['name']}")
    return EXIT_OK


# -- logs -----------------------------------------------------------------------------------


async def logs(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    run_ = await c.run(runner, args.run)  # a clean message for an unknown run
    path = run_path(runner, run_["id"]) + "/logs"
    if args.json:
        if args.follow:
            raise CliError(
                "-f cannot be combined with --json; for live structured logs, "
                "read the logs endpoint with Accept: text/event-stream",
                code=EXIT_USAGE,
            )
        render.print_json({"logs": await _json_logs(c, path, args.tail)})
        return EXIT_OK
    if args.follow:
        c.watching = (runner["name"], run_["id"])
        final = await follow_logs(c, runner, run_["id"], tail=args.tail)
        c.watching = None
        render.warn_log_incomplete(final)
        return EXIT_OK
    params = {"tail": str(args.tail)} if args.tail is not None else None
    async with c.stream(path, params) as resp:
        async for chunk in resp.content.iter_any():
            render.write_out(chunk)
    render.warn_log_incomplete(run_)
    return EXIT_OK


async def _json_logs(c: Client, path: str, tail: int | None) -> list[dict[str, Any]]:
    """Every entry (or the last `tail`), page by page with the `after` cursor."""
    entries: list[dict[str, Any]] = []
    params = {"limit": "2500"}
    while True:
        data = await c.request("GET", path, params=params, headers={"Accept": "application/json"})
        page = data["logs"]
        entries.extend(page)
        if tail is not None and len(entries) > tail:
            entries = entries[len(entries) - tail :] if tail else []
        if len(page) < int(params["limit"]) or not page:
            return entries
        params = {"limit": params["limit"], "after": str(page[-1]["id"])}


async def follow_logs(
    c: Client, runner: dict[str, Any], run_id: str, tail: int | None = None
) -> dict[str, Any]:
    """Print the run's output to stdout as it is written, until the run has
    completed; returns the final run.

    Reads `?follow=true`, which the daemon streams until the run completes. If that
    stream ends early (e.g. the daemon is stopping) or the daemon does not know
    `follow`, goes on by polling the whole log every POLL_SECONDS and printing only
    the bytes past what was printed already."""
    path = run_path(runner, run_id) + "/logs"
    offset: int | None = 0 if tail is None else None  # bytes of the log printed so far
    recent = b""  # the end of what was printed, to find our place when offset is unknown
    params = {"follow": "true"}
    if tail is not None:
        params["tail"] = str(tail)
    try:
        async with c.stream(path, params) as resp:
            async for chunk in resp.content.iter_any():
                render.write_out(chunk)
                if offset is not None:
                    offset += len(chunk)
                recent = (recent + chunk)[-RESUME_WINDOW:]
    except ApiError as e:
        if not (e.status == 400 and any("follow" in line for line in e.lines)):
            raise
        # a daemon without `follow`: poll from the start
    run_ = await c.run(runner, run_id)
    if run_["status"] in TERMINAL:
        return run_
    printed_any = bool(recent)
    while True:
        run_ = await c.run(runner, run_id)  # before the log: all output up to here is in it
        data = await c.read_bytes(path)
        if offset is None:
            offset = _resume_offset(data, recent) if printed_any else _tail_start(data, tail or 0)
        if len(data) > offset:
            render.write_out(data[offset:])
            recent = (recent + data[offset:])[-RESUME_WINDOW:]
            offset = len(data)
        if run_["status"] in TERMINAL:
            return run_
        await asyncio.sleep(POLL_SECONDS)


def _tail_start(data: bytes, lines: int) -> int:
    """Where the last `lines` lines of `data` begin (a last line without newline counts)."""
    if lines <= 0:
        return len(data)
    pos = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(lines):
        i = data.rfind(b"\n", 0, pos)
        if i < 0:
            return 0
        pos = i
    return pos + 1


def _resume_offset(data: bytes, recent: bytes) -> int:
    """After a `tail` follow ended early: the end of the printed bytes in the whole log."""
    if not recent or data.endswith(recent):
        return len(data)
    i = data.rfind(recent)
    return i + len(recent) if i >= 0 else len(data)
