"""Hostile and broken input (issue 3, "Bad input"), against runnerd's app in process
(tests/api/conftest.py: a real SQLite store, a fake engine and executor): every case
is a clear 4xx or is stored verbatim, never a 5xx, never a file read or written
outside `data_dir`. The cases that need a real container (a real run's log, oversized
logs, a full disk) are in tests/integration/test_bad_input.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from conftest import TEST_IMAGE_NAME, TEST_IMAGE_TAG, Api, Daemon
from yarl import URL

MIB = 1024 * 1024
SQLITE_MAGIC = b"SQLite format 3"
UUID_LOG = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.(log|idx)\Z")
NOT_FOUND = {"status": 404, "error": "Not Found"}
JSON = {"Content-Type": "application/json"}


async def raw(
    http: aiohttp.ClientSession,
    method: str,
    url: str | URL,
    *,
    key: str | None = None,
    data: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, bytes]:
    """One request exactly as given (the path is not re-quoted or normalised):
    (status, content type, body bytes)."""
    h = {"Authorization": f"Bearer {key}"} if key else {}
    h.update(headers or {})
    target = url if isinstance(url, URL) else URL(url, encoded=True)
    if isinstance(data, str):
        data = data.encode()
    body: Any = io.BytesIO(data) if data is not None and len(data) > 64 * 1024 else data
    async with http.request(method, target, headers=h, data=body) as resp:
        return resp.status, resp.content_type, await resp.read()


async def raw_http(daemon: Daemon, request_line_path: str, key: str) -> tuple[int, bytes]:
    """A GET written byte for byte on a TCP socket (no client-side normalisation of
    `..` segments): (status, whole response)."""
    url = URL(daemon.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(
            f"GET {request_line_path} HTTP/1.1\r\nHost: {url.host}\r\n"
            f"Authorization: Bearer {key}\r\nConnection: close\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    status = int(response.split(b" ", 2)[1])
    return status, response


def as_json(body: bytes) -> Any:
    return json.loads(body)


def assert_errors_400(status: int, body: bytes, *fields: str) -> list[str]:
    assert status == 400, (status, body[:500])
    data = as_json(body)
    assert set(data) == {"errors"}, data
    errors = data["errors"]
    assert isinstance(errors, list) and errors and all(isinstance(e, str) for e in errors), data
    for field in fields:
        assert any(field in e for e in errors), (field, errors)
    return errors


def assert_status_error(status: int, body: bytes, expected: int) -> None:
    assert status == expected, (status, body[:500])
    data = as_json(body)
    assert data["status"] == expected and isinstance(data["error"], str) and data["error"], data


def runner_body(**fields: Any) -> dict[str, Any]:
    return {
        "name": f"bad-input-{time.monotonic_ns()}",
        "image_name": TEST_IMAGE_NAME,
        "image_tag": TEST_IMAGE_TAG,
        **fields,
    }


async def runner_names(api: Api) -> list[str]:
    status, body = await api.get("/v1/runners")
    assert status == 200, body
    return sorted(r["name"] for r in body["runners"])


async def run_ids(api: Api, runner_id: str) -> list[str]:
    status, body = await api.get(f"/v1/runners/{runner_id}/runs")
    assert status == 200, body
    return [r["id"] for r in body["runs"]]


def assert_alive(daemon: Daemon) -> None:
    assert daemon.alive(), daemon.log_text()[-3000:]


def assert_nothing_outside_data_dir(daemon: Daemon) -> None:
    """The daemon's directory holds only what the test and runnerd put there: its
    config and log, and in data_dir the database, its secret key, the daemon's lock file
    and `<run id>.log` files with their `<run id>.idx` indexes."""
    top = sorted(p.name for p in daemon.dir.iterdir())
    assert top == ["config.toml", "daemon.log", "data"], top
    data = {p.name for p in daemon.data_dir.iterdir()}
    assert data <= {
        "runnerd.db",
        "runnerd.db-wal",
        "runnerd.db-shm",
        "logs",
        "secret.key",
        "runnerd.lock",
    }, data
    logs = [p.name for p in (daemon.data_dir / "logs").iterdir()]
    assert all(UUID_LOG.match(name) for name in logs), logs
    assert_no_runnerd_errors(daemon)


def assert_no_runnerd_errors(daemon: Daemon) -> None:
    """runnerd logged no error of its own (a 500 is logged as `ERROR runnerd.api`)."""
    errors = [ln for ln in daemon.log_text().splitlines() if " ERROR runnerd" in ln]
    assert not errors, daemon.log_text()[-3000:]


# -- body size ----------------------------------------------------------------------------


async def test_body_over_max_body_bytes_is_413_json_and_at_or_under_it_is_accepted(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    d = await start_daemon('[server]\nlisten = "127.0.0.1:0"\nmax_body_bytes = 2048\n')
    api = Api(http, d.url, d.key)
    runner = await api.create_runner(argv=["true"])
    rid = runner["id"]
    before = await runner_names(api)
    routes = [
        ("POST", "/v1/runners"),
        ("POST", f"/v1/runners/{rid}/runs"),
        ("POST", f"/v1/runners/{rid}/env_variables"),
        ("PATCH", f"/v1/runners/{rid}"),
    ]
    for size in (2049, 4096, 64 * 1024):
        for method, path in routes:
            payload = b'{"pad": "' + b"x" * (size - 11) + b'"}'
            assert len(payload) == size
            status, ctype, body = await raw(
                http, method, api.url + path, key=api.key, data=payload, headers=JSON
            )
            assert ctype == "application/json", (method, path, size, body[:200])
            assert_status_error(status, body, 413)
    assert await runner_names(api) == before
    assert await run_ids(api, rid) == []

    # At and just under the limit: no 413 (accepted, or refused for its content).
    for size in (2048, 2047):
        fields = runner_body(env_variables=[{"env_key": "PAD", "env_val": ""}])
        payload = json.dumps(fields).encode()
        fields["env_variables"][0]["env_val"] = "p" * (size - len(payload))
        payload = json.dumps(fields).encode()
        assert len(payload) == size
        status, _, body = await raw(
            http, "POST", api.url + "/v1/runners", key=api.key, data=payload, headers=JSON
        )
        assert status == 200, (size, body[:300])
        trigger = json.dumps({"env_variables": [{"env_key": "X", "env_val": ""}]}).encode()
        trigger = trigger.replace(b'""', b'"' + b"t" * (size - len(trigger)) + b'"')
        assert len(trigger) == size
        status, _, body = await raw(
            http,
            "POST",
            api.url + f"/v1/runners/{rid}/runs",
            key=api.key,
            data=trigger,
            headers=JSON,
        )
        assert status == 200, (size, body[:300])
    assert_alive(d)


async def test_huge_values_are_413_past_the_body_limit_and_400_past_a_field_limit(
    api: Api, daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    before = await runner_names(api)
    # A 5 MB name: the body is over the default 1 MiB limit.
    payload = json.dumps(runner_body(name="n" * (5 * MIB))).encode()
    status, _, body = await raw(
        http, "POST", api.url + "/v1/runners", key=api.key, data=payload, headers=JSON
    )
    assert_status_error(status, body, 413)
    # Inside the body limit, each field's own limit.
    for fields, field in [
        ({"run_command": "c" * 100_000}, "run_command"),
        ({"name": "n" * 100_000}, "name"),
        ({"argv": ["a" * 100_000]}, "argv[0]"),
        ({"entrypoint": "e" * 100_000}, "entrypoint"),
        ({"image_name": "i" * 100_000}, "image_name"),
        ({"image_tag": "t" * 100_000}, "image_tag"),
        (
            {"env_variables": [{"env_key": "K", "env_val": "v" * 100_000}]},
            "env_variables[0].env_val",
        ),
        (
            {"env_variables": [{"env_key": "K" * 100_000, "env_val": "v"}]},
            "env_variables[0].env_key",
        ),
        ({"timeout_seconds": 10**100}, "timeout_seconds"),
    ]:
        status, body = await api.post("/v1/runners", runner_body(**fields))
        errors = body["errors"] if status == 400 else None
        assert status == 400 and any(field in e for e in errors), (field, status, body)
        assert all(len(e) < 1000 for e in errors), f"{field}: the error echoes the value"
    assert await runner_names(api) == before
    assert_alive(daemon)


# -- content type and encoding --------------------------------------------------------------


async def test_non_json_body_with_json_content_type_is_400_listing_errors(
    api: Api, daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    runner = await api.create_runner(argv=["true"])
    before = await runner_names(api)
    for payload in (
        b"not json",
        b"{",
        b'{"name": "x",}',
        b"{'name': 'x'}",
        b'{"a": 1}}',
        b"NaN-ish",
        b'{"name": "a\x00b"}',
        b"\x00",
        b'"\\ud800"x',
    ):
        for method, path in (
            ("POST", "/v1/runners"),
            ("POST", f"/v1/runners/{runner['id']}/runs"),
            ("PATCH", f"/v1/runners/{runner['id']}"),
        ):
            status, ctype, body = await raw(
                http, method, api.url + path, key=api.key, data=payload, headers=JSON
            )
            assert ctype == "application/json", (payload, body[:200])
            assert_errors_400(status, body)
    assert await runner_names(api) == before
    assert await run_ids(api, runner["id"]) == []


@pytest.mark.parametrize(
    "content_type, payload",
    [
        ("text/plain", None),
        ("application/x-www-form-urlencoded", b"name=form-runner&image_name=busybox"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="name"\r\n\r\nmp-runner\r\n--xyz--\r\n',
        ),
        ("application/xml", b"<runner><name>x</name></runner>"),
    ],
    ids=["text-plain", "form", "multipart", "xml"],
)
async def test_wrong_content_type_is_415_and_creates_nothing(
    api: Api, http: aiohttp.ClientSession, content_type: str, payload: bytes | None
) -> None:
    before = await runner_names(api)
    data = payload if payload is not None else json.dumps(runner_body()).encode()
    status, _, body = await raw(
        http,
        "POST",
        api.url + "/v1/runners",
        key=api.key,
        data=data,
        headers={"Content-Type": content_type},
    )
    assert_status_error(status, body, 415)
    assert await runner_names(api) == before


async def test_non_utf8_body_bytes_are_400(
    api: Api, daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    before = await runner_names(api)
    for payload in (
        b'{"name": "\xff\xfe"}',
        b'{"name": "caf\xe9 runner"}',
        b"\xef\xbb\xbf" + json.dumps(runner_body()).encode(),  # a UTF-8 BOM
        json.dumps(runner_body()).encode("utf-16"),
    ):
        status, _, body = await raw(
            http, "POST", api.url + "/v1/runners", key=api.key, data=payload, headers=JSON
        )
        assert_errors_400(status, body)
    assert await runner_names(api) == before
    assert_alive(daemon)


async def test_json_nested_100000_deep_is_400_and_daemon_still_answers(
    api: Api, daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    runner = await api.create_runner(argv=["true"])
    deep = 100_000
    for payload in (
        "[" * deep,
        "[" * deep + "]" * deep,
        '{"a":' * deep + "1" + "}" * deep,
        json.dumps({"name": "x", "image_name": "y"})[:-1]
        + ', "argv": '
        + "[" * deep
        + "]" * deep
        + "}",
    ):
        for path in ("/v1/runners", f"/v1/runners/{runner['id']}/runs"):
            status, _, body = await raw(
                http, "POST", api.url + path, key=api.key, data=payload.encode(), headers=JSON
            )
            assert_errors_400(status, body)
            assert_alive(daemon)
    assert (await api.get("/healthz"))[0] == 200
    assert await run_ids(api, runner["id"]) == []
    await api.create_runner()  # still takes writes


# -- NUL bytes --------------------------------------------------------------------------------


async def test_nul_byte_in_any_string_field_is_400_naming_the_field(
    api: Api, daemon: Daemon
) -> None:
    runner = await api.create_runner(argv=["true"])
    rid = runner["id"]
    before = await runner_names(api)
    status, body = await api.post(
        f"/v1/runners/{rid}/env_variables", {"env_key": "OK", "env_val": "1"}
    )
    assert status == 200, body
    env_id = body["env_variable"]["id"]
    nul = "a\x00b"
    cases: list[tuple[str, str, Any, str]] = [
        ("POST", "/v1/runners", runner_body(name="nul" + nul), "name"),
        ("POST", "/v1/runners", runner_body(run_command="echo " + nul), "run_command"),
        ("POST", "/v1/runners", runner_body(argv=["echo", nul]), "argv[1]"),
        ("POST", "/v1/runners", runner_body(entrypoint=nul), "entrypoint"),
        ("POST", "/v1/runners", runner_body(image_tag="v" + nul), "image_tag"),
        ("POST", "/v1/runners", runner_body(image_name="busy" + nul), "image_name"),
        ("POST", "/v1/runners", runner_body(instance_type="standard-s" + nul), "instance_type"),
        (
            "POST",
            "/v1/runners",
            runner_body(env_variables=[{"env_key": "K", "env_val": nul}]),
            "env_variables[0].env_val",
        ),
        (
            "POST",
            "/v1/runners",
            runner_body(env_variables=[{"env_key": "K" + nul, "env_val": "v"}]),
            "env_variables[0].env_key",
        ),
        ("PATCH", f"/v1/runners/{rid}", {"name": "x" + nul + "yz"}, "name"),
        ("PATCH", f"/v1/runners/{rid}", {"argv": None, "run_command": nul}, "run_command"),
        ("POST", f"/v1/runners/{rid}/env_variables", {"env_key": "K", "env_val": nul}, "env_val"),
        (
            "POST",
            f"/v1/runners/{rid}/env_variables",
            {"env_key": "K" + nul, "env_val": "v"},
            "env_key",
        ),
        ("PATCH", f"/v1/runners/{rid}/env_variables/{env_id}", {"env_val": nul}, "env_val"),
        (
            "POST",
            f"/v1/runners/{rid}/runs",
            {"env_variables": [{"env_key": "K", "env_val": nul}]},
            "env_variables[0].env_val",
        ),
        (
            "POST",
            f"/v1/runners/{rid}/runs",
            {"env_variables": [{"env_key": nul, "env_val": "v"}]},
            "env_variables[0].env_key",
        ),
    ]
    for method, path, payload, field in cases:
        status, body = await api.request(method, path, json_body=payload)
        assert status == 400, (field, status, body)
        assert any(field in e for e in body["errors"]), (field, body)
    assert await runner_names(api) == before
    status, body = await api.get(f"/v1/runners/{rid}")
    assert body["runner"]["name"] == runner["name"] and body["runner"]["argv"] == ["true"]
    status, body = await api.get(f"/v1/runners/{rid}/env_variables")
    assert [(e["env_key"], e["env_val"]) for e in body["env_variables"]] == [("OK", "1")]
    assert await run_ids(api, rid) == []


async def test_nul_byte_in_a_json_object_key_is_400(api: Api, daemon: Daemon) -> None:
    runner = await api.create_runner(argv=["true"])
    before = await runner_names(api)
    for path, payload in [
        ("/v1/runners", {**runner_body(), "na\x00me": "x"}),
        ("/v1/runners", {"\x00": 1, **runner_body()}),
        ("/v1/runners", runner_body(env_variables=[{"env_key": "K", "env_val": "v", "\x00": "x"}])),
        (f"/v1/runners/{runner['id']}/runs", {"env_variables\x00": []}),
        (
            f"/v1/runners/{runner['id']}/env_variables",
            {"env_key": "K", "env_val": "v", "env\x00key": "x"},
        ),
    ]:
        status, body = await api.post(path, payload)
        assert status == 400, (path, status, body)
        assert body["errors"], body
    assert await runner_names(api) == before
    assert await run_ids(api, runner["id"]) == []


# -- paths and ids ------------------------------------------------------------------------------


# -- SQL-looking strings ----------------------------------------------------------------------


SQL_STRINGS = [
    "'; DROP TABLE runs; --",
    '" OR 1=1 --',
    "x' OR '1'='1",
    "1; DELETE FROM runners",
    "%' OR name LIKE '%",
    "\\'; --",
]


async def test_sql_looking_query_params_are_400_and_the_tables_survive(
    api: Api, daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    runner = await api.create_runner(argv=["true"])
    rid = runner["id"]
    run = await api.trigger(rid)
    await api.wait_done(rid, run["id"])
    queries = {
        "status": ["' OR 1=1 --", "pending' OR '1'='1", "succeeded; DROP TABLE runs"],
        "before": ["' OR '1'='1", f"{run['id']}' OR '1'='1", "1 UNION SELECT *"],
        "limit": ["1;DROP", "1 OR 1=1", "-1", "0", "1e3", "0x10", "1_000", " 1", "+1"],
    }
    for param, values in queries.items():
        for value in values:
            url = URL(
                api.url + f"/v1/runners/{rid}/runs?{param}={quote(value, safe='')}", encoded=True
            )
            status, _, body = await raw(http, "GET", url, key=api.key)
            assert_errors_400(status, body, param)
    for value in ("' OR 1=1 --", "1;DROP"):
        url = URL(
            api.url + f"/v1/runners/{rid}/runs/{run['id']}/logs?tail={quote(value)}", encoded=True
        )
        status, _, body = await raw(http, "GET", url, key=api.key)
        assert_errors_400(status, body, "tail")
    assert await run_ids(api, rid) == [run["id"]]
    assert runner["name"] in await runner_names(api)


# -- unicode digits and huge numbers --------------------------------------------------------------


async def test_unicode_digits_and_5000_digit_numbers_in_query_params_are_400_not_500(
    api: Api, daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    runner = await api.create_runner(argv=["true"])
    rid = runner["id"]
    run = await api.trigger(rid)
    await api.wait_done(rid, run["id"])
    for param, path in (
        ("limit", f"/v1/runners/{rid}/runs"),
        ("tail", f"/v1/runners/{rid}/runs/{run['id']}/logs"),
    ):
        for value in ("²", "١٢", "٣", "１２", "⑫", "5" * 5000, "1" + "0" * 4299, "9" * 13):
            url = URL(api.url + f"{path}?{param}={quote(value)}", encoded=True)
            status, _, body = await raw(http, "GET", url, key=api.key)
            errors = assert_errors_400(status, body, param)
            assert all(len(e) < 500 for e in errors), errors
    # The same numbers in a JSON body: 400 naming the field, not a 500.
    for big in ("9" * 5000, "1" + "0" * 4300, "1e999", "-0", "1.0"):
        payload = json.dumps(runner_body())[:-1] + f', "timeout_seconds": {big}}}'
        status, _, body = await raw(
            http, "POST", api.url + "/v1/runners", key=api.key, data=payload.encode(), headers=JSON
        )
        assert status == 400, (big[:20], status, body[:300])
    assert_alive(daemon)
    assert_no_runnerd_errors(daemon)


async def test_compressed_body_inflating_past_max_body_bytes_is_413(
    api: Api, daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    """A small gzip body that inflates to 64 MiB: the limit holds on what it inflates to."""
    import gzip

    before = await runner_names(api)
    bomb = gzip.compress(b'{"pad": "' + b"0" * (64 * MIB) + b'"}', compresslevel=9)
    assert len(bomb) < MIB
    status, _, body = await raw(
        http,
        "POST",
        api.url + "/v1/runners",
        key=api.key,
        data=bomb,
        headers={**JSON, "Content-Encoding": "gzip"},
    )
    assert_status_error(status, body, 413)
    assert await runner_names(api) == before
    assert_alive(daemon)


async def test_chunked_body_over_max_body_bytes_is_413(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    d = await start_daemon('[server]\nlisten = "127.0.0.1:0"\nmax_body_bytes = 2048\n')
    api = Api(http, d.url, d.key)
    before = await runner_names(api)

    async def chunks() -> Any:
        yield b'{"pad": "'
        for _ in range(64):
            yield b"x" * 1024
        yield b'"}'

    async with http.post(
        d.url + "/v1/runners", data=chunks(), headers={**api.headers(), **JSON}
    ) as resp:
        body = await resp.read()
        assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert_status_error(resp.status, body, 413)
    assert await runner_names(api) == before
    assert_alive(d)
