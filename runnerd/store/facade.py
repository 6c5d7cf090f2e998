"""`Store`: the one object the daemon, the API and the CLI hold. It opens and
closes the database and the secret key; each aggregate's operations (and their
SQL) live in that aggregate's module and are inherited from it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..crypto import SecretBox, SecretKeyError, is_encrypted, load_key
from ..models import Run
from .api_keys import ApiKeys
from .connection import Database
from .dashboard import Dashboard
from .registries import Registries
from .runners import Runners
from .runs import Runs
from .schedules import Schedules
from .schema import prepare
from .sessions import UiSessions
from .webhooks import Webhooks


class Store(ApiKeys, Dashboard, Runners, Runs, Registries, Schedules, UiSessions, Webhooks):
    def __init__(self, path: Path, secret_key_file: Path | None = None) -> None:
        self.path = path
        self.secret_key_file = secret_key_file or path.parent / "secret.key"
        self._box: SecretBox | None = None
        self._db = Database()
        # Called with each run that reached its final status, after the commit.
        self.on_run_completed: list[Callable[[Run], None]] = []

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            await self._db.open(self.path, prepare)
            await self._open_secrets()
        except BaseException:
            await self.close()
            raise

    async def _open_secrets(self) -> None:
        """Load the secret key; on first use make it and encrypt what was stored in
        plain text before; refuse a key that is not this database's."""
        row = await self._db.one("SELECT value FROM meta WHERE key = 'secret_check'")
        box = SecretBox(load_key(self.secret_key_file, create=row is None))
        if row is not None:
            if not box.matches(row["value"]):
                raise SecretKeyError(
                    f"the secret key in {self.secret_key_file} is not the key this database "
                    "was encrypted with; restore the original key file from your backup"
                )
            self._box = box
            return

        def encrypt_plain_values(db: sqlite3.Connection) -> None:
            for table, column in (("runner_env_variables", "env_val"), ("runs", "env")):
                rows = db.execute(f"SELECT id, {column} FROM {table}").fetchall()
                db.executemany(
                    f"UPDATE {table} SET {column} = ? WHERE id = ?",
                    [(box.encrypt(v), i) for i, v in rows if not is_encrypted(v)],
                )
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('secret_check', ?)", (box.check_value(),)
            )

        await self._db.write(encrypt_plain_values)
        self._box = box

    async def close(self, wait_seconds: float | None = None) -> None:
        """Finish what is in flight (at most `wait_seconds`, then abort it) and
        close every connection."""
        self.on_run_completed.clear()  # its listeners hold objects that hold the store
        await self._db.close(wait_seconds)

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def daemon_id(self) -> str:
        row = await self._db.one("SELECT value FROM meta WHERE key = 'daemon_id'")
        assert row is not None
        return str(row["value"])
