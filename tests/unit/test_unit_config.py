"""The config file: defaults, every rejected value naming its key, paths and time zones."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runnerd import config as cfg
from runnerd.config import BUILTIN_INSTANCE_TYPES, Config, ConfigError, from_dict, load


def _assert_defaults(c: Config) -> None:
    assert c.server.listen == "127.0.0.1:8420"
    assert (c.server.host, c.server.port) == ("127.0.0.1", 8420)
    assert c.scheduler.max_concurrent_runs == 4
    assert c.scheduler.on_shutdown == "leave"
    assert c.docker.network == "bridge"
    assert c.docker.url is None
    assert c.docker.stop_grace_seconds == 10
    assert c.timezone is None
    assert c.default_instance_type == "standard-s"
    assert set(c.instance_types) == {"standard-xs", "standard-s", "standard-m"}
    assert c.instance_types["standard-s"].cpu == 1.0
    assert c.instance_types["standard-s"].mem == 1024


def test_empty_dict_gives_every_default() -> None:
    _assert_defaults(from_dict({}))


def test_load_none_gives_every_default() -> None:
    _assert_defaults(load(None))


def test_empty_file_gives_every_default(tmp_path: Path) -> None:
    path = tmp_path / "runnerd.toml"
    path.write_text("")
    _assert_defaults(load(path))


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"bogus": 1}, "bogus"),
        ({"server": {"bogus": 1}}, "server.bogus"),
        ({"storage": {"bogus": 1}}, "storage.bogus"),
        ({"docker": {"bogus": 1}}, "docker.bogus"),
        ({"scheduler": {"bogus": 1}}, "scheduler.bogus"),
        ({"server": "127.0.0.1:1"}, "server"),
        ({"scheduler": {"max_concurrent_runs": 0}}, "scheduler.max_concurrent_runs"),
        ({"scheduler": {"max_concurrent_runs": -1}}, "scheduler.max_concurrent_runs"),
        ({"scheduler": {"max_concurrent_runs": "4"}}, "scheduler.max_concurrent_runs"),
        ({"scheduler": {"max_concurrent_runs": True}}, "scheduler.max_concurrent_runs"),
        ({"scheduler": {"max_concurrent_runs": 2.0}}, "scheduler.max_concurrent_runs"),
        ({"scheduler": {"on_shutdown": "kill"}}, "scheduler.on_shutdown"),
        ({"server": {"listen": "nope"}}, "server.listen"),
        ({"server": {"listen": ":8420"}}, "server.listen"),
        ({"server": {"listen": "127.0.0.1:"}}, "server.listen"),
        ({"server": {"listen": "127.0.0.1:70000"}}, "server.listen"),
        ({"server": {"listen": ""}}, "server.listen"),
        ({"server": {"listen": 8420}}, "server.listen"),
        ({"server": {"max_body_bytes": 10}}, "server.max_body_bytes"),
        ({"docker": {"url": "ftp://x"}}, "docker.url"),
        ({"docker": {"url": ""}}, "docker.url"),
        ({"docker": {"network": ""}}, "docker.network"),
        ({"docker": {"stop_grace_seconds": -1}}, "docker.stop_grace_seconds"),
        ({"docker": {"stop_grace_seconds": "10"}}, "docker.stop_grace_seconds"),
        ({"storage": {"data_dir": ""}}, "storage.data_dir"),
        ({"storage": {"max_log_bytes": 0}}, "storage.max_log_bytes"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"timezone": 1}, "timezone"),
        ({"default_instance_type": "huge"}, "default_instance_type"),
        ({"default_instance_type": 3}, "default_instance_type"),
        ({"instance_types": {}}, "instance_types"),
        ({"instance_types": {"x": {"mem": 512}}}, "instance_types.x.cpu"),
        ({"instance_types": {"x": {"cpu": 1}}}, "instance_types.x.mem"),
        ({"instance_types": {"x": {"cpu": 1, "mem": 512, "gpu": 1}}}, "instance_types.x.gpu"),
        ({"instance_types": {"Big One": {"cpu": 1, "mem": 512}}}, "instance_types.Big One"),
        ({"instance_types": {"x": {"cpu": 0, "mem": 512}}}, "instance_types.x.cpu"),
        ({"instance_types": {"x": {"cpu": 1, "mem": 1.5}}}, "instance_types.x.mem"),
        ({"instance_types": {"x": {"cpu": 1, "mem": 512, "pids": 0}}}, "instance_types.x.pids"),
        ({"instance_types": {"x": 5}}, "instance_types.x"),
    ],
)
def test_each_bad_value_raises_config_error_naming_its_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    assert str(info.value).startswith(f"{key}:"), str(info.value)


def test_port_out_of_range_message_names_the_port() -> None:
    with pytest.raises(ConfigError, match="70000"):
        from_dict({"server": {"listen": "127.0.0.1:70000"}})


def test_ipv6_listen_address_is_accepted_and_unbracketed() -> None:
    c = from_dict({"server": {"listen": "[::1]:9000"}})
    assert (c.server.host, c.server.port) == ("::1", 9000)


def test_default_instance_type_must_be_among_defined_types_when_builtins_replaced() -> None:
    with pytest.raises(ConfigError, match=r"^default_instance_type:"):
        from_dict({"instance_types": {"tiny": {"cpu": 0.25, "mem": 128}}})


def test_defining_instance_types_replaces_the_builtins() -> None:
    c = from_dict(
        {
            "default_instance_type": "tiny",
            "instance_types": {
                "tiny": {"cpu": 0.25, "mem": 128},
                "big_2": {"name": "Big", "cpu": 8, "mem": 8192, "pids": 4096},
            },
        }
    )
    assert set(c.instance_types) == {"tiny", "big_2"}
    tiny = c.instance_types["tiny"]
    assert (tiny.slug, tiny.name, tiny.cpu, tiny.mem, tiny.pids) == (
        "tiny",
        "tiny",
        0.25,
        128,
        1024,
    )
    big = c.instance_types["big_2"]
    assert (big.name, big.cpu, big.mem, big.pids) == ("Big", 8.0, 8192, 4096)
    assert isinstance(big.cpu, float)
    assert c.default_instance_type == "tiny"
    # the module-level built-ins are untouched
    assert set(BUILTIN_INSTANCE_TYPES) == {"standard-xs", "standard-s", "standard-m"}


def test_every_valid_setting_is_carried_into_the_config() -> None:
    c = from_dict(
        {
            "server": {"listen": "0.0.0.0:1", "max_body_bytes": 2048},
            "storage": {"data_dir": "/srv/runnerd", "max_log_bytes": 4096},
            "docker": {
                "url": "unix:///run/docker.sock",
                "network": "none",
                "stop_grace_seconds": 0,
            },
            "scheduler": {"max_concurrent_runs": 1000, "on_shutdown": "stop"},
            "timezone": "UTC",
            "default_instance_type": "standard-m",
        }
    )
    assert c.server.port == 1 and c.server.max_body_bytes == 2048
    assert c.storage.data_dir == Path("/srv/runnerd") and c.storage.max_log_bytes == 4096
    assert c.storage.db_path == Path("/srv/runnerd/runnerd.db")
    assert c.storage.logs_dir == Path("/srv/runnerd/logs")
    assert c.docker.url == "unix:///run/docker.sock" and c.docker.network == "none"
    assert c.docker.stop_grace_seconds == 0
    assert c.scheduler.max_concurrent_runs == 1000 and c.scheduler.on_shutdown == "stop"
    assert c.timezone == "UTC" and c.default_instance_type == "standard-m"


def test_relative_data_dir_is_resolved_against_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    path = conf_dir / "runnerd.toml"
    path.write_text('[storage]\ndata_dir = "state/db"\n')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    c = load(path)
    assert c.storage.data_dir == conf_dir.resolve() / "state" / "db"


def test_relative_data_dir_is_resolved_when_the_config_path_itself_is_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "runnerd.toml").write_text('[storage]\ndata_dir = "data"\n')
    monkeypatch.chdir(tmp_path)
    c = load("runnerd.toml")
    assert c.storage.data_dir.is_absolute()
    assert c.storage.data_dir == tmp_path.resolve() / "data"


def test_absolute_data_dir_is_kept_as_is(tmp_path: Path) -> None:
    path = tmp_path / "runnerd.toml"
    path.write_text('[storage]\ndata_dir = "/var/tmp/x"\n')
    assert load(path).storage.data_dir == Path("/var/tmp/x")


def test_load_of_a_missing_file_raises_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value)


def test_load_of_invalid_toml_raises_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server\nlisten = \n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value)
    assert "TOML" in str(info.value)


def test_load_of_a_non_utf8_file_raises_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('timezone = "Europe/Zürich"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value)


def test_load_of_a_directory_raises_config_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_load_of_a_file_with_a_bad_key_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "runnerd.toml"
    path.write_text("[scheduler]\nmax_concurrent_runs = 0\n")
    with pytest.raises(ConfigError, match=r"^scheduler\.max_concurrent_runs:"):
        load(path)


def test_tz_of_a_named_zone_gives_its_offset() -> None:
    tz = Config(timezone="Asia/Kolkata").tz
    assert datetime(2026, 1, 15, 12, 0, tzinfo=tz).utcoffset() == timedelta(hours=5, minutes=30)


def test_tz_without_a_zone_is_the_hosts_local_zone() -> None:
    tz = Config().tz
    now = datetime.now()
    assert now.replace(tzinfo=tz).utcoffset() == now.astimezone().utcoffset()


def test_default_data_dir_follows_xdg_data_home_for_non_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cfg.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert cfg.default_data_dir() == tmp_path / "runnerd"
    monkeypatch.setattr(cfg.os, "geteuid", lambda: 0)
    assert cfg.default_data_dir() == Path("/var/lib/runnerd")
