"""The client side of the `runnerd` command: talk to a running daemon over its REST API.

`runners`, `env`, `runs` and `logs` (wired up in cli.py) each end in `run(args)`,
which connects to `--url`/`$RUNNERD_URL` with `--token`/`$RUNNERD_TOKEN`, performs
one command with aiohttp under `asyncio.run`, prints tables (or the API's JSON with
`--json`) and turns every failure into a one-line message and an exit code — never a
traceback. Nothing here reads the daemon's config: the API is the only contract.

Exit codes: 0 success; 1 an error from the API or the connection; 2 a usage error
(also argparse's); `runs trigger --wait` ends with the run's own exit code, or, when
the run failed for another reason, with a code of its own (FAILURE_EXIT_CODES):
124 timeout (as coreutils' `timeout`), 125 never started (image_pull_failed,
start_failed), 126 lost, 130 canceled (also an interrupted client: 128 + SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

DEFAULT_URL = "http://127.0.0.1:8420"

EXIT_OK = 0
EXIT_ERROR = 1  # the API answered with an error, or the daemon could not be reached
EXIT_USAGE = 2  # bad arguments (argparse uses 2 as well)
EXIT_TIMEOUT = 124  # the run hit its timeout_seconds (as coreutils' `timeout`)
EXIT_NOT_STARTED = 125  # the run never started: image_pull_failed or start_failed
EXIT_LOST = 126  # the run's container disappeared: the result is unknown
EXIT_CANCELED = 130  # the run was canceled (or this client was interrupted: 128 + SIGINT)
FAILURE_EXIT_CODES = {
    "timeout": EXIT_TIMEOUT,
    "image_pull_failed": EXIT_NOT_STARTED,
    "start_failed": EXIT_NOT_STARTED,
    "lost": EXIT_LOST,
    "canceled": EXIT_CANCELED,
}

TERMINAL = frozenset({"succeeded", "failed"})
POLL_SECONDS = 0.5  # status/log polling where the daemon cannot push
CANCEL_RETRY_SECONDS = 15.0  # how long `runs cancel` retries a 503 (run starting)
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=10)
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
RESUME_WINDOW = 64 * 1024  # bytes of printed output kept to find our place again
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


class CliError(Exception):
    """Ends the command: each line goes to stderr as `runnerd: line`, then `code`."""

    def __init__(self, *lines: str, code: int = EXIT_ERROR) -> None:
        super().__init__("; ".join(lines))
        self.lines = list(lines)
        self.code = code


class ApiError(CliError):
    """The daemon answered with an error status; the lines are its own messages."""

    def __init__(self, status: int, reason: str, body: Any) -> None:
        if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
            lines = [str(e) for e in body["errors"]]
        elif isinstance(body, dict) and isinstance(body.get("error"), str):
            lines = [f"{body.get('status', status)} {body['error']}"]
        else:
            lines = [f"{status} {reason}".rstrip()]
        if status == 401:
            lines.append("check the API key given with --token or $RUNNERD_TOKEN")
        elif status == 403:
            lines.append("this API key is read-only")
        super().__init__(*lines)
        self.status = status
        self.body = body


# -- the connection ---------------------------------------------------------------------


class Client:
    """One daemon, one aiohttp session for the lifetime of a command."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._session: aiohttp.ClientSession | None = None
        # what an interrupted `--wait`/`-f` tells the user: (runner ref, run id)
        self.watching: tuple[str, str] | None = None

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.token}", "User-Agent": "runnerd-cli"},
            timeout=REQUEST_TIMEOUT,
            auto_decompress=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with Client(...)`"
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> Any:
        """The decoded JSON answer; ApiError for any status >= 400."""
        kwargs: dict[str, Any] = {"params": params, "headers": dict(headers or {})}
        if timeout is not None:
            kwargs["timeout"] = timeout
        if body is not None:
            kwargs["data"] = json.dumps(body).encode()
            kwargs["headers"]["Content-Type"] = "application/json"
        async with self.session.request(method, self.url + path, **kwargs) as resp:
            raw = await resp.read()
            data = _decode_json(raw)
            if resp.status >= 400:
                raise ApiError(resp.status, resp.reason or "", data)
            if data is None:
                raise CliError(
                    f"{method} {path}: the daemon answered {resp.status} "
                    "without a JSON body; is --url a runnerd daemon?"
                )
            return data

    @asynccontextmanager
    async def stream(
        self, path: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A response to read as it arrives (no overall timeout); ApiError on >= 400."""
        async with self.session.get(
            self.url + path, params=params, headers=headers, timeout=STREAM_TIMEOUT
        ) as resp:
            if resp.status >= 400:
                raise ApiError(resp.status, resp.reason or "", _decode_json(await resp.read()))
            yield resp

    async def read_bytes(self, path: str, params: dict[str, str] | None = None) -> bytes:
        async with self.stream(path, params) as resp:
            return await resp.read()

    # -- lookups --

    async def runner(self, ref: str) -> dict[str, Any]:
        """A runner by id or by name."""
        if UUID.match(ref):
            try:
                return (await self.request("GET", f"/v1/runners/{ref.lower()}"))["runner"]
            except ApiError as e:
                if e.status != 404:
                    raise
        runners = (await self.request("GET", "/v1/runners"))["runners"]
        for r in runners:
            if r.get("name") == ref:
                return r
        raise CliError(f"no runner with the id or name {ref!r} (see: runnerd runners list)")

    async def run(self, runner: dict[str, Any], run_id: str) -> dict[str, Any]:
        try:
            return (await self.request("GET", _run_path(runner, run_id)))["run"]
        except ApiError as e:
            if e.status == 404:
                raise CliError(
                    f"runner {runner['name']!r} has no run {run_id!r} "
                    f"(see: runnerd runs list {runner['name']})"
                ) from None
            raise


def _decode_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8")) if raw.strip() else None
    except ValueError:
        return None


def _run_path(runner: dict[str, Any], run_id: str) -> str:
    return f"/v1/runners/{runner['id']}/runs/{run_id.lower()}"


# -- entry point --------------------------------------------------------------------------


Command = Callable[[Client, argparse.Namespace], Awaitable[int]]


def run(args: argparse.Namespace) -> int:
    """Run the client command `args.command` and map every failure to an exit code."""
    url = (args.url or os.environ.get("RUNNERD_URL") or DEFAULT_URL).strip()
    token = args.token if args.token is not None else os.environ.get("RUNNERD_TOKEN", "")
    token = token.strip()
    if not token:
        return _fail(
            CliError(
                "no API token: pass --token KEY or set RUNNERD_TOKEN "
                "(make a key on the daemon's host with: runnerd keys create "
                "--name NAME)",
                code=EXIT_USAGE,
            )
        )
    if not re.match(r"https?://[^/\s]+", url):
        return _fail(
            CliError(f"--url must be an http:// or https:// URL, got {url!r}", code=EXIT_USAGE)
        )
    if any(ord(c) < 33 or ord(c) > 126 for c in token):
        return _fail(
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
        return _fail(e)
    except aiohttp.ClientConnectorError as e:
        errno = getattr(e.os_error, "errno", None)
        why = (
            os.strerror(errno)
            if isinstance(errno, int) and errno > 0
            else getattr(e.os_error, "strerror", None) or str(e.os_error or e)
        )
        return _fail(
            CliError(f"cannot reach the daemon at {client.url}: {why}", *_watch_hint(client))
        )
    except (
        aiohttp.ServerDisconnectedError,
        aiohttp.ClientPayloadError,
        aiohttp.ClientOSError,
    ) as e:
        return _fail(
            CliError(
                f"lost the connection to the daemon at {client.url}: {e or type(e).__name__}",
                *_watch_hint(client),
            )
        )
    except aiohttp.InvalidURL as e:
        return _fail(CliError(f"--url {url!r} is not a valid URL ({e})", code=EXIT_USAGE))
    except TimeoutError:
        return _fail(CliError(f"the daemon at {client.url} did not answer in time"))
    except aiohttp.ClientError as e:
        return _fail(
            CliError(f"request to the daemon at {client.url} failed: {e or type(e).__name__}")
        )
    except KeyboardInterrupt:
        return _fail(CliError("interrupted", *_watch_hint(client), code=EXIT_CANCELED))
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


def _fail(e: CliError) -> int:
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    for line in e.lines:
        print(f"runnerd: {line}", file=sys.stderr)
    return e.code


# -- output -------------------------------------------------------------------------------


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def _when(value: str | None) -> str:
    """`2026-01-15T10:01:00.000+01:00` → `2026-01-15 10:01:00` for a table."""
    if not value:
        return "-"
    match = re.match(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)", value)
    return f"{match.group(1)} {match.group(2)}" if match else value


def _show(obj: dict[str, Any]) -> None:
    """`key: value` lines, keys aligned."""
    width = max(len(k) for k in obj) + 1
    for key, value in obj.items():
        if key == "instance_type" and isinstance(value, dict):
            shown = (
                f"{value.get('slug')} ({value.get('name')}: {value.get('cpu')} CPU, "
                f"{value.get('mem')} MiB)"
            )
        else:
            shown = _cell(value)
        print(f"{key + ':':<{width}} {shown}")


def _write_out(data: bytes) -> None:
    if data:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


# -- argument helpers ------------------------------------------------------------------


def key_val(text: str) -> tuple[str, str]:
    """argparse type of `-e KEY=VAL`: the key is checked by the daemon."""
    key, sep, val = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VAL, got {text!r}")
    return key, val


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
        _print_json(data)
        return EXIT_OK
    runners = data["runners"]
    if not runners:
        print("no runners; create one with: runnerd runners create --name NAME --image IMAGE")
        return EXIT_OK
    _table(
        ["NAME", "ID", "IMAGE", "INSTANCE TYPE", "TIMEOUT"],
        [
            [
                _cell(r["name"]),
                r["id"],
                f"{r['image_name']}:{r['image_tag']}",
                _cell((r.get("instance_type") or {}).get("slug")),
                f"{r['timeout_seconds']}s",
            ]
            for r in runners
        ],
    )
    return EXIT_OK


async def runners_show(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    if args.json:
        _print_json({"runner": runner})
    else:
        _show(runner)
    return EXIT_OK


async def runners_create(c: Client, args: argparse.Namespace) -> int:
    data = await c.request("POST", "/v1/runners", body=_runner_body(args, create=True))
    if args.json:
        _print_json(data)
    else:
        _show(data["runner"])
    return EXIT_OK


async def runners_update(c: Client, args: argparse.Namespace) -> int:
    body = _runner_body(args, create=False)
    if not body:
        raise CliError(
            "nothing to update: give at least one option (see: runnerd runners update --help)",
            code=EXIT_USAGE,
        )
    runner = await c.runner(args.runner)
    data = await c.request("PATCH", f"/v1/runners/{runner['id']}", body=body)
    if args.json:
        _print_json(data)
    else:
        _show(data["runner"])
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
        _print_json(data)
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
        _print_json(data)
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
        _print_json({"env_variables": env})
    elif not env:
        print(
            f"runner {runner['name']} has no env variables; set one with: "
            f"runnerd env set {runner['name']} KEY=VAL"
        )
    else:
        _table(["KEY", "VALUE"], [[e["env_key"], _cell(e["env_val"])] for e in env])
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
        _print_json({"env_variables": changed})
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
        _print_json({"deleted": True, "env_keys": deleted})
    return EXIT_OK


# -- runs -----------------------------------------------------------------------------------


def _run_row(r: dict[str, Any]) -> list[str]:
    return [
        r["id"],
        r["status"],
        _cell(r.get("exit_code")),
        _when(r.get("started_at")),
        _when(r.get("completed_at")),
        _cell(r.get("failure_reason")),
    ]


async def runs_list(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    params = {
        k: str(v)
        for k, v in (("status", args.status), ("limit", args.limit), ("before", args.before))
        if v is not None
    }
    data = await c.request("GET", f"/v1/runners/{runner['id']}/runs", params=params)
    if args.json:
        _print_json(data)
    elif not data["runs"]:
        print(
            f"no runs of runner {runner['name']}"
            + (f" with status {args.status}" if args.status else "")
        )
    else:
        _table(
            ["ID", "STATUS", "EXIT", "STARTED", "COMPLETED", "REASON"],
            [_run_row(r) for r in data["runs"]],
        )
    return EXIT_OK


async def runs_show(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    run_ = await c.run(runner, args.run)
    if args.json:
        _print_json({"run": run_})
    else:
        _show(run_)
    return EXIT_OK


async def runs_trigger(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    body = {"env_variables": _env_body(args.env)} if args.env else None
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    data = await c.request("POST", f"/v1/runners/{runner['id']}/runs", body=body, headers=headers)
    run_ = data["run"]
    if not args.wait:
        if args.json:
            _print_json(data)
        else:
            _show(run_)
        return EXIT_OK
    c.watching = (runner["name"], run_["id"])
    if args.json:  # no log on stdout: it holds the final run, for a script to parse
        final = await _poll_until_done(c, runner, run_["id"])
        _print_json({"run": final})
    else:
        final = await follow_logs(c, runner, run_["id"])
    c.watching = None
    return _report(final)


async def runs_cancel(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    path = _run_path(runner, args.run) + "/cancel"
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
        _print_json(data)
    else:
        _show(data["run"])
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


# -- logs -----------------------------------------------------------------------------------


async def logs(c: Client, args: argparse.Namespace) -> int:
    runner = await c.runner(args.runner)
    run_ = await c.run(runner, args.run)  # a clean message for an unknown run
    path = _run_path(runner, run_["id"]) + "/logs"
    if args.json:
        if args.follow:
            raise CliError(
                "-f cannot be combined with --json; for live structured logs, "
                "read the logs endpoint with Accept: text/event-stream",
                code=EXIT_USAGE,
            )
        _print_json({"logs": await _json_logs(c, path, args.tail)})
        return EXIT_OK
    if args.follow:
        c.watching = (runner["name"], run_["id"])
        await follow_logs(c, runner, run_["id"], tail=args.tail)
        c.watching = None
        return EXIT_OK
    params = {"tail": str(args.tail)} if args.tail is not None else None
    async with c.stream(path, params) as resp:
        async for chunk in resp.content.iter_any():
            _write_out(chunk)
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
    path = _run_path(runner, run_id) + "/logs"
    offset: int | None = 0 if tail is None else None  # bytes of the log printed so far
    recent = b""  # the end of what was printed, to find our place when offset is unknown
    params = {"follow": "true"}
    if tail is not None:
        params["tail"] = str(tail)
    try:
        async with c.stream(path, params) as resp:
            async for chunk in resp.content.iter_any():
                _write_out(chunk)
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
            _write_out(data[offset:])
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
