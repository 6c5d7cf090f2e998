"""The daemon's configuration: one TOML file, every key optional, every default built in.

This module is the only place that knows the config's keys. A bad file raises
`ConfigError` with a message naming the key, so `runnerd serve` can exit with it.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tzlocal

DEFAULT_LISTEN = "127.0.0.1:8420"


class ConfigError(Exception):
    """The config cannot be used; the message names the key and what is wrong."""


@dataclass(frozen=True)
class InstanceType:
    """Resource limits a runner's containers get: CPUs, memory in MiB, max processes."""

    slug: str
    name: str
    cpu: float
    mem: int
    pids: int
    # Swarm placement constraints its runs get, on top of [swarm] placement (swarm backend only)
    placement: tuple[str, ...] = ()


BUILTIN_INSTANCE_TYPES: dict[str, InstanceType] = {
    t.slug: t
    for t in (
        InstanceType("standard-xs", "Standard XS", 0.5, 512, 256),
        InstanceType("standard-s", "Standard S", 1.0, 1024, 512),
        InstanceType("standard-m", "Standard M", 2.0, 2048, 1024),
    )
}
DEFAULT_INSTANCE_TYPE = "standard-s"


@dataclass(frozen=True)
class ServerConfig:
    listen: str = DEFAULT_LISTEN
    max_body_bytes: int = 1024 * 1024
    metrics_token: str | None = None  # when set, GET /metrics needs "Bearer <token>"
    max_log_followers: int = 200  # live log streams (follow, SSE) at once; past it 503

    @property
    def host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]


@dataclass(frozen=True)
class StorageConfig:
    data_dir: Path = field(default_factory=lambda: default_data_dir())
    max_log_bytes: int = 100 * 1024 * 1024  # per run; past it output is dropped
    secret_key_file: Path | None = None  # None: <data_dir>/secret.key
    log_read_threads: int = 4  # the thread pool API reads of log files run in

    @property
    def secret_key_path(self) -> Path:
        return self.secret_key_file or self.data_dir / "secret.key"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "runnerd.db"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"


@dataclass(frozen=True)
class DockerConfig:
    url: str | None = None  # None: DOCKER_HOST, else the local socket
    network: str = "bridge"
    stop_grace_seconds: float = 10.0
    request_timeout_seconds: float = 60.0  # each short engine call (create, start, inspect, ...)
    pull_stall_seconds: float = 120.0  # a pull with no progress for this long is aborted
    start_timeout_seconds: float = 3600.0  # a run's pull + create, from when it is picked


BACKENDS = ("docker", "swarm")


@dataclass(frozen=True)
class ExecutorConfig:
    # "docker": each run a container on the engine [docker] url names; "swarm": each
    # run a service on the Swarm whose manager [docker] url names (see runnerd/swarm.py)
    backend: str = "docker"


@dataclass(frozen=True)
class SwarmConfig:
    placement: tuple[str, ...] = ()  # constraints every run's service gets


@dataclass(frozen=True)
class SchedulerConfig:
    max_concurrent_runs: int = 4
    on_shutdown: str = "leave"  # "leave" running containers for the next start, or "stop" them


@dataclass(frozen=True)
class RetentionConfig:
    max_age_days: float | None = None  # completed runs older than this are deleted
    max_runs_per_runner: int | None = None  # keep only this many completed runs per runner
    sweep_interval_seconds: float = 3600.0


@dataclass(frozen=True)
class WebhooksConfig:
    secret: str | None = None  # HMAC-SHA256 key for X-Runnerd-Signature; needed for webhook_url
    timeout_seconds: float = 10.0  # per delivery attempt
    max_retry_seconds: float = 3600.0  # after a run completed, how long failed deliveries retry
    # None: any host. Else the only hosts a webhook_url may name (names or addresses,
    # normalized by `host_key`): the daemon POSTs wherever a full key tells it to.
    allowed_hosts: frozenset[str] | None = None

    def allows(self, url_host: str) -> bool:
        """Whether a webhook URL's host (`urlsplit(url).hostname`) may be POSTed to."""
        return self.allowed_hosts is None or host_key(url_host) in self.allowed_hosts


@dataclass(frozen=True)
class UiConfig:
    enabled: bool = True  # the dashboard under /ui/
    # The address users reach the dashboard at (e.g. behind a TLS proxy); None: the
    # request's own. An https one makes the session cookie Secure; its origin is the
    # one a form's POST may come from.
    public_url: str | None = None
    session_hours: float = 12.0  # a dashboard session idle this long ends

    @property
    def secure_cookie(self) -> bool:
        return self.public_url is not None and urlsplit(self.public_url).scheme == "https"


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    docker: DockerConfig = field(default_factory=DockerConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    swarm: SwarmConfig = field(default_factory=SwarmConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    ui: UiConfig = field(default_factory=UiConfig)
    timezone: str | None = None  # None: the host's
    default_instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_types: dict[str, InstanceType] = field(
        default_factory=lambda: dict(BUILTIN_INSTANCE_TYPES)
    )

    @property
    def tz(self) -> tzinfo:
        if self.timezone is None:
            return host_zone()
        return zoneinfo.ZoneInfo(self.timezone)


@functools.cache
def host_zone() -> tzinfo:
    """The host's time zone ($TZ, else /etc/localtime), with its DST rules: each
    time gets the offset in force at that time, not the one in force at start."""
    try:
        tzlocal.reload_localzone()  # now, not what tzlocal cached before (host_zone caches)
        return tzlocal.get_localzone()
    except (LookupError, ValueError, OSError):  # e.g. a POSIX rule in $TZ
        fixed = datetime.now().astimezone().tzinfo
        logging.getLogger("runnerd").warning(
            "the host's time zone (TZ=%r) is not an IANA zone such as Europe/Berlin; times "
            "use the offset in force now (%s) all year: set timezone in the config",
            os.environ.get("TZ"),
            fixed,
        )
        assert fixed is not None  # astimezone() always gives an aware time
        return fixed


def host_key(host: str) -> str:
    """A host as `[webhooks] allowed_hosts` compares it: lowercase, no trailing dot,
    an IP address in its one canonical form (so `::1` matches `[0::1]`)."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def default_data_dir() -> Path:
    """`/var/lib/runnerd` as root, else the per-user data directory."""
    if os.geteuid() == 0:
        return Path("/var/lib/runnerd")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "runnerd"


def load(path: str | os.PathLike[str] | None) -> Config:
    """Read and check a config file; `None` gives the built-in defaults."""
    if path is None:
        return Config()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return from_dict(data, base_dir=Path(path).resolve().parent)


def from_dict(data: dict[str, Any], base_dir: Path | None = None) -> Config:
    """Build a Config from parsed TOML, naming the key of the first problem."""
    top_keys = {
        "server",
        "storage",
        "docker",
        "executor",
        "swarm",
        "scheduler",
        "retention",
        "webhooks",
        "ui",
        "timezone",
        "default_instance_type",
        "instance_types",
    }
    _no_unknown_keys(data, top_keys, "")

    server = _section(
        data,
        "server",
        ServerConfig,
        {
            "listen": _listen,
            "max_body_bytes": lambda k, v: _int(k, v, 1024, 1024 * 1024 * 1024),
            "metrics_token": _token,
            "max_log_followers": lambda k, v: _int(k, v, 1, 100_000),
        },
    )
    storage = _section(
        data,
        "storage",
        StorageConfig,
        {
            "data_dir": lambda k, v: _path(k, v, base_dir),
            "max_log_bytes": lambda k, v: _int(k, v, 1024, 2**50),
            "secret_key_file": lambda k, v: _path(k, v, base_dir),
            "log_read_threads": lambda k, v: _int(k, v, 1, 256),
        },
    )
    docker = _section(
        data,
        "docker",
        DockerConfig,
        {
            "url": _docker_url,
            "network": _nonempty_str,
            "stop_grace_seconds": lambda k, v: _number(k, v, 0, 3600),
            "request_timeout_seconds": lambda k, v: _number(k, v, 1, 3600),
            "pull_stall_seconds": lambda k, v: _number(k, v, 1, 86400),
            "start_timeout_seconds": lambda k, v: _number(k, v, 1, 7 * 86400),
        },
    )
    executor = _section(
        data, "executor", ExecutorConfig, {"backend": lambda k, v: _choice(k, v, BACKENDS)}
    )
    swarm = _section(data, "swarm", SwarmConfig, {"placement": _placement})
    scheduler = _section(
        data,
        "scheduler",
        SchedulerConfig,
        {
            "max_concurrent_runs": lambda k, v: _int(k, v, 1, 1000),
            "on_shutdown": lambda k, v: _choice(k, v, ("leave", "stop")),
        },
    )
    retention = _section(
        data,
        "retention",
        RetentionConfig,
        {
            "max_age_days": lambda k, v: _number(k, v, 0.001, 36500),
            "max_runs_per_runner": lambda k, v: _int(k, v, 1, 10_000_000),
            "sweep_interval_seconds": lambda k, v: _number(k, v, 1, 7 * 86400),
        },
    )
    webhooks = _section(
        data,
        "webhooks",
        WebhooksConfig,
        {
            "secret": _webhook_secret,
            "timeout_seconds": lambda k, v: _number(k, v, 0.1, 300),
            "max_retry_seconds": lambda k, v: _number(k, v, 0, 7 * 86400),
            "allowed_hosts": _host_list,
        },
    )
    ui = _section(
        data,
        "ui",
        UiConfig,
        {
            "enabled": _bool,
            "public_url": _public_url,
            "session_hours": lambda k, v: _number(k, v, 0.01, 24 * 366),
        },
    )

    timezone = data.get("timezone")
    if timezone is not None:
        timezone = _nonempty_str("timezone", timezone)
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"timezone: unknown time zone {timezone!r} "
                "(use an IANA name such as 'Europe/Berlin' or 'UTC')"
            ) from None

    instance_types = dict(BUILTIN_INSTANCE_TYPES)
    if "instance_types" in data:
        instance_types = _instance_types(data["instance_types"])
    default_type = data.get("default_instance_type", DEFAULT_INSTANCE_TYPE)
    default_type = _nonempty_str("default_instance_type", default_type)
    if default_type not in instance_types:
        raise ConfigError(
            f"default_instance_type: {default_type!r} is not one of the instance types "
            f"({', '.join(sorted(instance_types))})"
        )

    if executor.backend == "swarm":
        if docker.network == "none":
            # Swarm has no "none" network for services (it refuses the name): a
            # task with no network gets its node's default bridge.
            raise ConfigError(
                'docker.network: "none" is not available to Swarm services; with '
                '[executor] backend = "swarm" name "bridge" (each node\'s default), '
                '"host" or a swarm-scoped network'
            )
    else:
        placed = [
            f"instance_types.{t.slug}.placement" for t in instance_types.values() if t.placement
        ]
        if swarm.placement or placed:
            key = "swarm.placement" if swarm.placement else placed[0]
            raise ConfigError(
                f"{key}: placement applies to the Swarm backend only; set [executor] "
                'backend = "swarm" or remove it'
            )

    return Config(
        server=server,
        storage=storage,
        docker=docker,
        executor=executor,
        swarm=swarm,
        scheduler=scheduler,
        retention=retention,
        webhooks=webhooks,
        ui=ui,
        timezone=timezone,
        default_instance_type=default_type,
        instance_types=instance_types,
    )


Parser = Callable[[str, Any], Any]


def _section(data: dict[str, Any], name: str, cls: type, parsers: dict[str, Parser]) -> Any:
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: must be a table ([{name}])")
    _no_unknown_keys(raw, set(parsers), name + ".")
    values = {key: parse(f"{name}.{key}", raw[key]) for key, parse in parsers.items() if key in raw}
    return cls(**values)


def _no_unknown_keys(raw: dict[str, Any], known: set[str], prefix: str) -> None:
    for key in raw:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown key (known: {', '.join(sorted(known))})")


def _instance_types(raw: Any) -> dict[str, InstanceType]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("instance_types: must hold at least one [instance_types.<slug>] table")
    types: dict[str, InstanceType] = {}
    fields = {f.name for f in dataclasses.fields(InstanceType)} - {"slug"}
    for slug, spec in raw.items():
        key = f"instance_types.{slug}"
        if not _is_slug(slug):
            raise ConfigError(f"{key}: the slug must be 1-50 of a-z, 0-9, '-' and '_'")
        if not isinstance(spec, dict):
            raise ConfigError(f"{key}: must be a table")
        _no_unknown_keys(spec, fields, key + ".")
        for required in ("cpu", "mem"):
            if required not in spec:
                raise ConfigError(f"{key}.{required}: is required")
        types[slug] = InstanceType(
            slug=slug,
            name=_nonempty_str(f"{key}.name", spec.get("name", slug)),
            cpu=_number(f"{key}.cpu", spec["cpu"], 0.01, 1024),
            mem=_int(f"{key}.mem", spec["mem"], 6, 16 * 1024 * 1024),
            pids=_int(f"{key}.pids", spec.get("pids", 1024), 1, 4_194_304),
            placement=_placement(f"{key}.placement", spec.get("placement", [])),
        )
    return types


def _is_slug(s: str) -> bool:
    return 1 <= len(s) <= 50 and all(
        c.isascii() and (c.islower() or c.isdigit() or c in "-_") for c in s
    )


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(listen)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _listen(key: str, value: Any) -> str:
    text = _nonempty_str(key, value)
    try:
        _, port = _split_listen(text)
    except ValueError:
        raise ConfigError(
            f"{key}: must look like 'HOST:PORT' (e.g. '127.0.0.1:8420' "
            f"or '[::1]:8420'), got {text!r}"
        ) from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}: port {port} is out of range 0-65535")
    return text


def _docker_url(key: str, value: Any) -> str:
    text = _nonempty_str(key, value)
    if not text.startswith(("unix://", "tcp://", "http://", "https://", "ssh://")):
        raise ConfigError(
            f"{key}: must start with unix://, tcp://, http://, https:// or ssh://, got {text!r}"
        )
    return text


def _path(key: str, value: Any, base_dir: Path | None) -> Path:
    p = Path(_nonempty_str(key, value)).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return p


def _token(key: str, value: Any) -> str:
    text = _nonempty_str(key, value)
    if text != text.strip():
        raise ConfigError(
            f"{key}: must not begin or end with spaces (a client's "
            "Authorization header is read without them, so it could never match)"
        )
    return text


_HOST_NAME = re.compile(
    r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
    r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z"
)  # "_": DNS allows it


def _host_list(key: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{key}: must be a non-empty list of host names or addresses, such "
            'as ["hooks.example.com", "10.0.0.7"] (leave it out to allow any '
            f"host), got {value!r}"
        )
    hosts = set()
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{key}[{i}]: must be a host name or address, got {item!r}")
        host = host_key(item)
        if not _is_ip(host) and not _HOST_NAME.match(host):
            raise ConfigError(
                f"{key}[{i}]: {item!r} is not a host name or address (give "
                "the host alone: no scheme, port or path)"
            )
        hosts.add(host)
    return frozenset(hosts)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _webhook_secret(key: str, value: Any) -> str:
    text = _nonempty_str(key, value)
    if len(text) < 16:
        raise ConfigError(f"{key}: must be at least 16 characters (use a random string)")
    return text


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false, got {value!r}")
    return value


def _public_url(key: str, value: Any) -> str:
    text = _nonempty_str(key, value).strip()
    try:
        parts = urlsplit(text)
        # .port raises on one that is not a port (`:99999`, `:x`), urlsplit on a bad [IPv6]
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(
            f"{key}: must be an http:// or https:// URL such as "
            f"'https://runnerd.example.com/', got {value!r}"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{key}: must have no user, query or fragment, got {value!r}")
    return text


# A Swarm constraint: an attribute (node.id, node.hostname, node.role,
# node.platform.os, node.labels.<name>, engine.labels.<name>), == or !=, a value.
_CONSTRAINT = re.compile(r"^\s*(node|engine)\.[A-Za-z0-9_.-]+\s*(==|!=)\s*\S.*$")


def _placement(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise ConfigError(
            f"{key}: must be a list of constraints such as ['node.labels.runnerd==yes'], "
            f"got {value!r}"
        )
    for c in value:
        if not _CONSTRAINT.match(c):
            raise ConfigError(
                f"{key}: {c!r} is not a Swarm constraint (an attribute such as "
                "node.labels.<name>, node.hostname or node.role, then == or !=, then a value)"
            )
    return tuple(c.strip() for c in value)


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return str(value)


def _nonempty_str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: must be a non-empty string, got {value!r}")
    return value


def _int(key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{key}: must be a whole number from {lo} to {hi}, got {value!r}")
    return value


def _number(key: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(f"{key}: must be a number from {lo:g} to {hi:g}, got {value!r}")
    return float(value)
