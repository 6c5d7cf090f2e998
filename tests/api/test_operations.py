"""Operating runnerd (issue 4) where no engine is needed, against runnerd's app in
process (tests/api/conftest.py): the metrics format and token, and webhook_url
validation. Metrics of real runs, retention, webhooks sent and systemd are
tests/integration/test_operations.py's."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from conftest import Api, Daemon
from prometheus_client.parser import text_string_to_metric_families

SECRET = "0123456789abcdef-secret"
WEBHOOKS = f'[webhooks]\nsecret = "{SECRET}"\n'
METRICS_TOKEN = "s3cret-token-123"


def api_for(http: aiohttp.ClientSession, daemon: Daemon) -> Api:
    return Api(http, daemon.url, daemon.key)


async def metrics_text(api: Api, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with api.session.get(api.url + "/metrics", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain"), resp.headers
        return await resp.text()


async def test_metrics_is_prometheus_text_format_0_0_4_served_without_a_key(api: Api) -> None:
    async with api.session.get(api.url + "/metrics") as resp:  # no API key
        assert resp.status == 200, await resp.text()
        content_type = resp.headers["Content-Type"]
        text = await resp.text()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {
        "runnerd_runs_completed",
        "runnerd_runs",
        "runnerd_run_duration_seconds",
        "runnerd_run_queue_wait_seconds",
        "runnerd_http_requests",
    } <= names, names
    # The classic text exposition format, which is what the body is (and what
    # prometheus_client itself serves to a scraper that does not negotiate).
    assert content_type.startswith("text/plain; version=0.0.4"), content_type


async def test_metrics_token_is_required_when_configured(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    daemon = await start_daemon(
        f'[server]\nlisten = "127.0.0.1:0"\nmetrics_token = "{METRICS_TOKEN}"\n'
    )
    api = api_for(http, daemon)
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {daemon.key}"},
    ):
        async with http.get(daemon.url + "/metrics", headers=headers) as resp:
            assert resp.status == 401, (headers, await resp.text())
    text = await metrics_text(api, METRICS_TOKEN)
    assert any(f.name == "runnerd_runs" for f in text_string_to_metric_families(text))


async def test_webhook_url_needs_a_secret_and_an_http_url(
    start_daemon: Callable[..., Daemon], http: aiohttp.ClientSession
) -> None:
    plain = api_for(http, await start_daemon())
    status, body = await plain.post(
        "/v1/runners",
        {
            "name": "hooked",
            "image_name": "runnerd-test/busybox",
            "webhook_url": "http://127.0.0.1:9/hook",
        },
    )
    assert status == 400, body
    assert any("webhook_url" in e for e in body["errors"]), body

    signed = api_for(http, await start_daemon(WEBHOOKS))
    for url in ("ftp://x", "x", "http://"):
        status, body = await signed.post(
            "/v1/runners",
            {"name": "hooked", "image_name": "runnerd-test/busybox", "webhook_url": url},
        )
        assert status == 400, (url, body)
        assert any("webhook_url" in e for e in body["errors"]), body
    status, body = await signed.get("/v1/runners")
    assert status == 200 and body["runners"] == [], body
