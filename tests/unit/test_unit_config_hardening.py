"""Config keys and defaults that close holes: metrics_token without stray spaces,
[webhooks] allowed_hosts, and the host's time zone with its DST rules."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from runnerd.config import Config, ConfigError, from_dict, host_zone
from runnerd.timefmt import format_ms

JULY_UTC = int(datetime(2026, 7, 15, 12, 0, tzinfo=UTC).timestamp() * 1000)
JANUARY_UTC = int(datetime(2026, 1, 15, 9, 1, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize("token", [" x ", "x ", " x", "\ttoken", "token\n"])
def test_metrics_token_with_surrounding_spaces_is_refused_naming_the_key(token: str) -> None:
    with pytest.raises(ConfigError, match=r"^server\.metrics_token: .*spaces"):
        from_dict({"server": {"metrics_token": token}})


def test_metrics_token_with_inner_spaces_is_kept() -> None:
    assert from_dict({"server": {"metrics_token": "a b"}}).server.metrics_token == "a b"


def test_allowed_hosts_absent_allows_any_host() -> None:
    webhooks = from_dict({}).webhooks
    assert webhooks.allowed_hosts is None
    assert webhooks.allows("169.254.169.254") and webhooks.allows("anything.example")


def test_allowed_hosts_match_names_exactly_ignoring_case_and_addresses_in_any_form() -> None:
    webhooks = from_dict(
        {"webhooks": {"allowed_hosts": ["CI.Example.com.", "10.0.0.7", "[::1]"]}}
    ).webhooks
    for host in (
        "ci.example.com",
        "CI.EXAMPLE.COM",
        "ci.example.com.",
        "10.0.0.7",
        "::1",
        "0:0::1",
    ):
        assert webhooks.allows(host), host
    for host in (
        "x.ci.example.com",
        "ci.example.com.evil.net",
        "example.com",
        "10.0.0.8",
        "127.0.0.1",
        "localhost",
        "",
        "010.0.0.7",
    ):
        assert not webhooks.allows(host), host


@pytest.mark.parametrize(
    "value, where",
    [
        ([], "webhooks.allowed_hosts:"),
        ("ci.example.com", "webhooks.allowed_hosts:"),
        (["ci.example.com:443"], r"webhooks.allowed_hosts\[0\]:"),
        (["ok.example", "https://ci.example.com"], r"webhooks.allowed_hosts\[1\]:"),
        (["ci.example.com/hook"], r"webhooks.allowed_hosts\[0\]:"),
        ([""], r"webhooks.allowed_hosts\[0\]:"),
        ([7], r"webhooks.allowed_hosts\[0\]:"),
        (["*.example.com"], r"webhooks.allowed_hosts\[0\]:"),
    ],
)
def test_bad_allowed_hosts_is_refused_naming_the_item(value: Any, where: str) -> None:
    with pytest.raises(ConfigError, match="^" + where):
        from_dict({"webhooks": {"allowed_hosts": value}})


@pytest.fixture
def host_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set the host's $TZ for one test; the zone caches are cleared before and after."""

    def use(tz: str) -> None:
        monkeypatch.setenv("TZ", tz)
        host_zone.cache_clear()

    with monkeypatch.context() as m:
        monkeypatch = m
        yield use
    host_zone.cache_clear()


@pytest.mark.parametrize(
    "tz", ["Europe/Berlin", ":Europe/Berlin", "/usr/share/zoneinfo/Europe/Berlin"]
)
def test_unset_timezone_is_the_host_zone_with_the_offset_of_each_time(
    host_tz: Any, tz: str
) -> None:
    host_tz(tz)
    zone = Config().tz
    assert format_ms(JULY_UTC, zone) == "2026-07-15T14:00:00.000+02:00"
    assert format_ms(JANUARY_UTC, zone) == "2026-01-15T10:01:00.000+01:00"


def test_a_posix_tz_rule_falls_back_to_the_current_offset_and_says_so(
    host_tz: Any, caplog: pytest.LogCaptureFixture
) -> None:
    host_tz("CET-1CEST,M3.5.0,M10.5.0/3")
    with caplog.at_level(logging.WARNING, logger="runnerd"):
        zone = Config().tz
    assert format_ms(JANUARY_UTC, zone) is not None
    assert any("set timezone in the config" in r.getMessage() for r in caplog.records)
