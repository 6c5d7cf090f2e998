"""The `runnerd` command: `serve` runs the daemon, `keys` manages API keys."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from . import config as config_mod
from .auth import hash_secret, new_secret
from .models import Scope
from .store import Conflict, Store
from .timefmt import format_ms

SYSTEM_CONFIG = Path("/etc/runnerd/config.toml")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        config = config_mod.load(_config_path(args.config))
    except config_mod.ConfigError as e:
        print(f"runnerd: bad config: {e}", file=sys.stderr)
        return 2
    return int(args.func(args, config) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runnerd", description="Run containerized jobs over a REST API.")
    parser.add_argument("--version", action="version", version=f"runnerd {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    config_help = ("config file (default: $RUNNERD_CONFIG, else /etc/runnerd/config.toml "
                   "if it exists, else built-in defaults)")

    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", metavar="PATH", help=config_help)
    serve.set_defaults(func=_serve)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(metavar="ACTION", required=True)
    create = keys_sub.add_parser("create", help="make a key and print its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", choices=[s.value for s in Scope], default=Scope.FULL.value)
    create.add_argument("--config", metavar="PATH", help=config_help)
    create.set_defaults(func=_keys_create)
    list_ = keys_sub.add_parser("list", help="list keys (never their secrets)")
    list_.add_argument("--config", metavar="PATH", help=config_help)
    list_.set_defaults(func=_keys_list)
    revoke = keys_sub.add_parser("revoke", help="delete a key; it stops working at once")
    revoke.add_argument("name")
    revoke.add_argument("--config", metavar="PATH", help=config_help)
    revoke.set_defaults(func=_keys_revoke)
    return parser


def _config_path(given: str | None) -> str | None:
    if given:
        return given
    if os.environ.get("RUNNERD_CONFIG"):
        return os.environ["RUNNERD_CONFIG"]
    return str(SYSTEM_CONFIG) if SYSTEM_CONFIG.exists() else None


def setup_logging() -> None:
    """Plain lines to stderr; journald adds its own timestamps, a terminal gets ours."""
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journald else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt, stream=sys.stderr)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _serve(args: argparse.Namespace, config: config_mod.Config) -> int:
    from .daemon import serve

    setup_logging()
    try:
        asyncio.run(serve(config))
    except OSError as e:
        logging.getLogger("runnerd").error("cannot start: %s", e)
        return 1
    return 0


def _with_store(config: config_mod.Config, action) -> int:  # type: ignore[no-untyped-def]
    async def run() -> int:
        async with Store(config.storage.db_path) as store:
            return int(await action(store))
    try:
        return asyncio.run(run())
    except OSError as e:
        print(f"runnerd: cannot open the database in {config.storage.data_dir}: {e}",
              file=sys.stderr)
        return 1


def _keys_create(args: argparse.Namespace, config: config_mod.Config) -> int:
    name = args.name.strip()
    if not 1 <= len(name) <= 100 or any(ord(c) < 32 for c in name):
        print("runnerd: --name must be 1-100 printable characters", file=sys.stderr)
        return 2
    secret = new_secret()

    async def action(store: Store) -> int:
        try:
            await store.create_api_key(name, Scope(args.scope), hash_secret(secret))
        except Conflict as e:
            print(f"runnerd: {e}", file=sys.stderr)
            return 1
        print(f"Created {args.scope} API key {name!r}. Its secret is shown only now:")
        print(secret)
        return 0
    return _with_store(config, action)


def _keys_list(args: argparse.Namespace, config: config_mod.Config) -> int:
    tz = config.tz

    async def action(store: Store) -> int:
        keys = await store.list_api_keys()
        if not keys:
            print("no API keys; make one with: runnerd keys create --name NAME")
            return 0
        width = max(len(k.name) for k in keys)
        print(f"{'NAME':<{width}}  SCOPE  CREATED")
        for k in keys:
            print(f"{k.name:<{width}}  {k.scope.value:<5}  {format_ms(k.created_at, tz)}")
        return 0
    return _with_store(config, action)


def _keys_revoke(args: argparse.Namespace, config: config_mod.Config) -> int:
    async def action(store: Store) -> int:
        if await store.revoke_api_key(args.name):
            print(f"revoked API key {args.name!r}")
            return 0
        print(f"runnerd: no API key named {args.name!r}", file=sys.stderr)
        return 1
    return _with_store(config, action)
