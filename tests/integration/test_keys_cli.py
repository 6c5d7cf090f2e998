"""The `runnerd` command line: API keys (made once, shown once, stored as a hash),
`--version`, and `serve` refusing a bad config with a message naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from conftest import Api, Daemon, runnerd_cli, write_config

import runnerd

pytestmark = pytest.mark.docker_only("API keys and the config check are the same on every engine")


def create_key(config: Path, name: str, *scope: str) -> subprocess.CompletedProcess[str]:
    args = ["keys", "create", "--name", name, "--config", str(config)]
    if scope:
        args += ["--scope", *scope]
    return runnerd_cli(*args, check=False)


def secret_of(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines, out
    secret = lines[-1]
    assert secret == secret.strip() and secret and " " not in secret, (
        f"last line is not the secret alone: {secret!r}"
    )
    assert len(secret) >= 32, secret  # enough randomness to be a secret
    return secret


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config for CLI-only tests: no daemon needed to manage keys."""
    path = tmp_path / "config.toml"
    write_config(path, tmp_path / "data")
    return path


async def test_keys_create_prints_a_working_secret_alone_on_the_last_line(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    full = secret_of(create_key(daemon.config_path, "ci"))
    read = secret_of(create_key(daemon.config_path, "dashboard", "read"))
    assert full != read
    api = Api(http, daemon.url, full)
    status, body = await api.post("/v1/runners", {"name": "from-new-key", "image_name": "busybox"})
    assert status == 200, body
    status, body = await api.get("/v1/runners", key=read)
    assert status == 200 and [r["name"] for r in body["runners"]] == ["from-new-key"], body
    status, body = await api.post(
        "/v1/runners", {"name": "from-read-key", "image_name": "busybox"}, key=read
    )
    assert (status, body) == (403, {"status": 403, "error": "Forbidden"})


def test_each_keys_create_makes_a_different_secret(config: Path) -> None:
    secrets = {secret_of(create_key(config, f"key{i}")) for i in range(3)}
    assert len(secrets) == 3


async def test_only_a_hash_of_the_secret_is_stored(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    name = "stored-as-hash"
    secret = secret_of(create_key(daemon.config_path, name))
    status, _ = await Api(http, daemon.url, secret).get("/v1/runners")
    assert status == 200  # the daemon has read the key, so it is in the files now
    files = sorted(daemon.data_dir.glob("runnerd.db*"))
    assert daemon.data_dir / "runnerd.db" in files, files
    stored = b"".join(f.read_bytes() for f in files)
    # the search can find what is there: the key's name is stored in plain text
    assert name.encode() in stored, f"key name not found in {files}: wrong files searched?"
    body = secret.split("_", 1)[-1]  # also without any prefix
    for needle in {secret, body, body[:16], body[-16:]}:
        assert needle.encode() not in stored, f"{needle!r} is stored in {files}"
    assert secret not in daemon.log_text()


def test_keys_list_shows_names_and_scopes_but_never_secrets(config: Path) -> None:
    full = secret_of(create_key(config, "deploy-bot"))
    read = secret_of(create_key(config, "grafana", "read"))
    out = runnerd_cli("keys", "list", "--config", str(config))
    lines = out.stdout.splitlines()
    by_name = {line.split()[0]: line.split() for line in lines if line.split()}
    assert "full" in by_name["deploy-bot"], out.stdout
    assert "read" in by_name["grafana"], out.stdout
    for secret in (full, read):
        assert secret not in out.stdout + out.stderr
        assert secret.split("_", 1)[-1][:12] not in out.stdout + out.stderr


def test_keys_create_with_a_taken_name_fails_and_keeps_the_first_key(config: Path) -> None:
    first = secret_of(create_key(config, "twice"))
    again = create_key(config, "twice")
    assert again.returncode != 0, again
    assert "twice" in again.stderr, again.stderr
    assert first not in again.stdout
    listed = runnerd_cli("keys", "list", "--config", str(config)).stdout
    assert [line.split()[0] for line in listed.splitlines()].count("twice") == 1, listed


async def test_keys_create_with_a_taken_name_leaves_the_first_secret_working(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    first = secret_of(create_key(daemon.config_path, "taken"))
    assert create_key(daemon.config_path, "taken").returncode != 0
    status, _ = await Api(http, daemon.url, first).get("/v1/runners")
    assert status == 200


def test_keys_create_with_an_unknown_scope_fails(config: Path) -> None:
    out = create_key(config, "weird", "admin")
    assert out.returncode != 0
    assert "scope" in out.stderr, out.stderr
    assert "weird" not in runnerd_cli("keys", "list", "--config", str(config)).stdout


def test_keys_revoke_of_an_unknown_name_fails(config: Path) -> None:
    secret_of(create_key(config, "exists"))
    out = runnerd_cli("keys", "revoke", "does-not-exist", "--config", str(config), check=False)
    assert out.returncode != 0, out
    assert "does-not-exist" in out.stderr, out.stderr
    listed = runnerd_cli("keys", "list", "--config", str(config)).stdout
    assert "exists" in listed


def test_keys_revoke_removes_the_key_from_the_list(config: Path) -> None:
    secret_of(create_key(config, "short-lived"))
    secret_of(create_key(config, "stays"))
    runnerd_cli("keys", "revoke", "short-lived", "--config", str(config))
    names = [
        line.split()[0]
        for line in runnerd_cli("keys", "list", "--config", str(config)).stdout.splitlines()
        if line.split()
    ]
    assert "short-lived" not in names and "stays" in names, names
    again = runnerd_cli("keys", "revoke", "short-lived", "--config", str(config), check=False)
    assert again.returncode != 0


def test_version_prints_the_package_version() -> None:
    out = runnerd_cli("--version")
    assert out.stdout.strip() == f"runnerd {runnerd.__version__}", out
    assert runnerd.__version__[0].isdigit()


BAD_CONFIGS = [
    (
        "max-concurrent-zero",
        "",
        "[scheduler]\nmax_concurrent_runs = 0\n",
        "scheduler.max_concurrent_runs",
    ),
    (
        "max-concurrent-string",
        "",
        '[scheduler]\nmax_concurrent_runs = "4"\n',
        "scheduler.max_concurrent_runs",
    ),
    ("unknown-section-key", "", '[server]\nlisten = "127.0.0.1:0"\nbogus = 1\n', "server.bogus"),
    ("unknown-top-level-key", 'colour = "red"', "", "colour"),
    ("unknown-section", "", "[extras]\nx = 1\n", "extras"),
    ("bad-timezone", 'timezone = "Mars/Olympus_Mons"', "", "timezone"),
    ("timezone-not-string", "timezone = 5", "", "timezone"),
    ("bad-listen", "", '[server]\nlisten = "nowhere"\n', "server.listen"),
    (
        "negative-grace",
        "",
        '[docker]\nnetwork = "none"\nstop_grace_seconds = -1\n',
        "docker.stop_grace_seconds",
    ),
    (
        "unknown-default-instance-type",
        'default_instance_type = "huge"',
        "",
        "default_instance_type",
    ),
    (
        "instance-type-without-mem",
        "",
        "[instance_types.tiny]\ncpu = 0.5\n",
        "instance_types.tiny.mem",
    ),
    ("data-dir-not-string", "", "[storage]\ndata_dir = 5\n", "storage.data_dir"),
]


@pytest.mark.parametrize(
    "top_level,extra,key", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_serve_with_a_bad_config_exits_nonzero_naming_the_key(
    tmp_path: Path, top_level: str, extra: str, key: str
) -> None:
    path = tmp_path / "config.toml"
    write_config(path, tmp_path / "data", extra, top_level=top_level)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "runnerd", "serve", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"runnerd serve accepted the bad config and kept running:\n{path.read_text()}")
    assert out.returncode != 0, out
    assert key in out.stderr, f"stderr does not name {key!r}:\n{out.stderr}"
    assert "Traceback" not in out.stderr, out.stderr
    assert "listening on" not in out.stdout + out.stderr


def test_serve_with_a_config_that_is_not_toml_exits_nonzero(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[server\nlisten = \n")
    out = subprocess.run(
        [sys.executable, "-m", "runnerd", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode != 0, out
    assert str(path) in out.stderr or "TOML" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr


def test_serve_with_a_missing_config_file_exits_nonzero_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    out = subprocess.run(
        [sys.executable, "-m", "runnerd", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode != 0, out
    assert str(path) in out.stderr, out.stderr


def test_keys_commands_refuse_a_bad_config_too(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    write_config(path, tmp_path / "data", "[scheduler]\nmax_concurrent_runs = 0\n")
    out = create_key(path, "never")
    assert out.returncode != 0, out
    assert "scheduler.max_concurrent_runs" in out.stderr, out.stderr
    assert not (tmp_path / "data" / "runnerd.db").exists()
