"""Container registries over the API (issue 5), against runnerd's app in process
(tests/api/conftest.py): CRUD and validation, and the password never in a response.
Pulling from a real registry is tests/integration/test_registries.py's.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import aiohttp
import pytest
from conftest import Api, Daemon

TIME_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(?:Z|[+-]\d\d:\d\d)\Z")
REGISTRY_KEYS = {"id", "name", "host", "username", "created_at", "updated_at"}


class RecordingApi(Api):
    """An Api that keeps every response body, to search them for secrets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bodies: list[str] = []

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, body = await super().request(method, path, **kwargs)
        self.bodies.append(
            body.decode("utf-8", "replace") if isinstance(body, bytes) else json.dumps(body)
        )
        return status, body

    def assert_never_said(self, *secrets_: str) -> None:
        for secret in secrets_:
            leaked = [b[:300] for b in self.bodies if secret in b]
            assert not leaked, f"a response contains a secret: {leaked}"


@pytest.fixture
def rapi(http: aiohttp.ClientSession, daemon: Daemon) -> RecordingApi:
    return RecordingApi(http, daemon.url, daemon.key)


# -- container registries CRUD ------------------------------------------------------


async def test_registry_crud_never_returns_the_password(rapi: RecordingApi) -> None:
    password = "crud-pw-" + secrets.token_hex(12)
    body = {
        "name": "private",
        "host": "registry.example.com:5000",
        "username": "bot",
        "password": password,
    }
    status, data = await rapi.post("/v1/container_registries", body)
    assert status == 200, data
    cr = data["container_registry"]
    assert set(cr) == REGISTRY_KEYS
    assert (cr["name"], cr["host"], cr["username"]) == (
        "private",
        "registry.example.com:5000",
        "bot",
    )
    assert TIME_FORMAT.match(cr["created_at"]), cr

    status, data = await rapi.get("/v1/container_registries")
    assert status == 200 and data == {"container_registries": [cr]}, data
    status, data = await rapi.get(f"/v1/container_registries/{cr['id']}")
    assert status == 200 and data == {"container_registry": cr}, data

    new_password = "crud-pw2-" + secrets.token_hex(12)
    status, data = await rapi.patch(
        f"/v1/container_registries/{cr['id']}", {"host": "ghcr.io", "password": new_password}
    )
    assert status == 200, data
    patched = data["container_registry"]
    assert set(patched) == REGISTRY_KEYS
    assert (patched["id"], patched["name"], patched["host"]) == (cr["id"], "private", "ghcr.io")

    # A runner using it keeps it alive.
    runner = await rapi.create_runner(image_name="team/job", container_registry_id=cr["id"])
    assert runner["container_registry_id"] == cr["id"]
    status, data = await rapi.delete(f"/v1/container_registries/{cr['id']}")
    assert status == 409, data
    status, _ = await rapi.get(f"/v1/container_registries/{cr['id']}")
    assert status == 200

    status, data = await rapi.patch(f"/v1/runners/{runner['id']}", {"container_registry_id": None})
    assert status == 200 and data["runner"]["container_registry_id"] is None, data
    status, data = await rapi.delete(f"/v1/container_registries/{cr['id']}")
    assert status == 200 and data == {"deleted": True}, data
    status, data = await rapi.get(f"/v1/container_registries/{cr['id']}")
    assert status == 404, data
    status, data = await rapi.get("/v1/container_registries")
    assert status == 200 and data == {"container_registries": []}, data

    rapi.assert_never_said(password, new_password)


async def test_registry_validation_names_the_field(rapi: RecordingApi) -> None:
    good = {
        "name": "valid-reg",
        "host": "registry.example.com",
        "username": "u",
        "password": "validation-pw-" + secrets.token_hex(8),
    }

    async def errors_of(method: str, path: str, body: Any) -> str:
        status, data = await rapi.request(method, path, json_body=body)
        assert status == 400, (body, data)
        return " ".join(data["errors"])

    no_password = {k: v for k, v in good.items() if k != "password"}
    assert "password" in await errors_of("POST", "/v1/container_registries", no_password)
    for host in (
        "http://x",
        "a/b",
        "https://registry.example.com",
        "reg.example.com/team",
        "",
        "has space",
    ):
        assert "host" in await errors_of(
            "POST", "/v1/container_registries", {**good, "host": host}
        ), host
    assert "name" in await errors_of("POST", "/v1/container_registries", {**good, "name": ""})
    assert "password" in await errors_of(
        "POST", "/v1/container_registries", {**good, "password": ""}
    )
    assert "username" in await errors_of(
        "POST", "/v1/container_registries", {**good, "username": 5}
    )

    status, data = await rapi.post("/v1/container_registries", good)
    assert status == 200, data
    cr = data["container_registry"]
    assert "name" in await errors_of("POST", "/v1/container_registries", good)  # taken
    assert "host" in await errors_of(
        "PATCH", f"/v1/container_registries/{cr['id']}", {"host": "http://x"}
    )
    await errors_of("PATCH", f"/v1/container_registries/{cr['id']}", {})

    unknown = "00000000-0000-4000-8000-000000000000"
    for method, body in (("GET", None), ("PATCH", {"name": "other"}), ("DELETE", None)):
        status, data = await rapi.request(
            method, f"/v1/container_registries/{unknown}", json_body=body
        )
        assert status == 404, (method, data)
    status, _ = await rapi.post(f"/v1/runners/{unknown}/warm")
    assert status == 404

    # Runner fields that refer to registries and pull policies.
    for fields, field in (
        ({"container_registry_id": unknown}, "container_registry_id"),
        ({"container_registry_id": "nope"}, "container_registry_id"),
        ({"image_pull_policy": "sometimes"}, "image_pull_policy"),
    ):
        status, data = await rapi.post(
            "/v1/runners", {"name": f"r-{secrets.token_hex(3)}", "image_name": "team/job", **fields}
        )
        assert status == 400 and field in " ".join(data["errors"]), data

    rapi.assert_never_said(good["password"])
