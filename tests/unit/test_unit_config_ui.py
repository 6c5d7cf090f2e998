"""The [ui] section: its defaults, what makes the cookie Secure, and every rejected
value naming its key; config.example.toml's [ui] loads and says what the code does."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from runnerd.config import ConfigError, UiConfig, from_dict

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


def test_the_dashboard_is_on_with_a_12_hour_session_and_no_public_url_by_default() -> None:
    ui = from_dict({}).ui
    assert ui == UiConfig(enabled=True, public_url=None, session_hours=12.0)
    assert not ui.secure_cookie


@pytest.mark.parametrize(
    ("public_url", "secure"),
    [
        ("https://runnerd.example.com/", True),
        ("HTTPS://runnerd.example.com/", True),  # the scheme is case-insensitive
        ("https://runnerd.example.com:8443", True),
        ("http://runnerd.example.com/", False),
        ("http://127.0.0.1:8420/", False),
    ],
)
def test_an_https_public_url_makes_the_cookie_secure(public_url: str, secure: bool) -> None:
    ui = from_dict({"ui": {"public_url": public_url}}).ui
    assert ui.public_url == public_url
    assert ui.secure_cookie is secure


def test_enabled_false_and_a_short_session_are_kept() -> None:
    ui = from_dict({"ui": {"enabled": False, "session_hours": 0.5}}).ui
    assert ui.enabled is False and ui.session_hours == 0.5


@pytest.mark.parametrize(
    ("ui", "message"),
    [
        (
            {"public_url": "runnerd.example.com"},
            "ui.public_url: must be an http:// or https:// URL",
        ),
        ({"public_url": "ftp://runnerd.example.com/"}, "ui.public_url: must be an http://"),
        ({"public_url": "https://"}, "ui.public_url: must be an http://"),
        ({"public_url": "https://runnerd.example.com:99999/"}, "ui.public_url: must be an http"),
        ({"public_url": "https://runnerd.example.com:x/"}, "ui.public_url: must be an http://"),
        ({"public_url": "https://[::1/"}, "ui.public_url: must be an http://"),
        ({"public_url": ""}, "ui.public_url:"),
        ({"public_url": 8420}, "ui.public_url:"),
        ({"public_url": "https://a.example/?x=1"}, "ui.public_url: must have no user, query"),
        ({"public_url": "https://a.example/#top"}, "ui.public_url: must have no user, query"),
        ({"public_url": "https://me:pw@a.example/"}, "ui.public_url: must have no user, query"),
        ({"session_hours": 0}, "ui.session_hours:"),
        ({"session_hours": -1}, "ui.session_hours:"),
        ({"session_hours": 24 * 366 + 1}, "ui.session_hours:"),
        ({"session_hours": "12"}, "ui.session_hours:"),
        ({"session_hours": True}, "ui.session_hours:"),
        ({"enabled": "yes"}, "ui.enabled: must be true or false"),
        ({"enabled": 1}, "ui.enabled: must be true or false"),
        ({"public_ur": "https://a.example/"}, "ui.public_ur: unknown key"),
    ],
)
def test_a_bad_ui_value_is_refused_naming_its_key(ui: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        from_dict({"ui": ui})
    assert str(e.value).startswith(message), str(e.value)


def test_ui_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"^ui: must be a table"):
        from_dict({"ui": "on"})


def _example_ui_section() -> str:
    text = EXAMPLE.read_text()
    start = text.index("\n[ui]\n")
    end = text.index("\n[", start + 1)
    return text[start:end]


def test_the_example_configs_ui_section_loads_and_holds_the_defaults() -> None:
    section = tomllib.loads(_example_ui_section())
    assert from_dict(section).ui == UiConfig()


def test_the_example_configs_commented_public_url_and_session_range_are_accepted() -> None:
    section = _example_ui_section()
    # Every commented-out setting in it, uncommented, is a valid one.
    uncommented = "\n".join(
        line.removeprefix("# ")
        for line in section.splitlines()
        if line.startswith("[") or " = " in line.removeprefix("# ")
    )
    ui = from_dict(tomllib.loads(uncommented)).ui
    assert ui.public_url == "https://runnerd.example.com/" and ui.secure_cookie
    assert "(0.01-8784)" in section  # the range it states is the one checked
    from_dict({"ui": {"session_hours": 0.01}})
    from_dict({"ui": {"session_hours": 8784}})
    for outside in (0.009, 8784.1):
        with pytest.raises(ConfigError, match=r"^ui.session_hours:"):
            from_dict({"ui": {"session_hours": outside}})
