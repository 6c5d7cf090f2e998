"""API keys: names, scopes and secret hashes (never the secrets)."""

from __future__ import annotations

import sqlite3
import uuid

from ..models import ApiKey, Scope, now_ms
from .base import Aggregate
from .errors import conflict_as


class ApiKeys(Aggregate):
    async def create_api_key(self, name: str, scope: Scope, secret_hash: str) -> ApiKey:
        key = ApiKey(
            id=str(uuid.uuid4()), name=name, scope=scope, created_at=now_ms(), last_used_at=None
        )

        def insert(db: sqlite3.Connection) -> None:
            with conflict_as(f"name: an API key named {name!r} already exists"):
                db.execute(
                    "INSERT INTO api_keys (id, name, scope, secret_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (key.id, name, scope.value, secret_hash, key.created_at),
                )

        await self._db.write(insert)
        return key

    async def list_api_keys(self) -> list[ApiKey]:
        rows = await self._db.all("SELECT * FROM api_keys ORDER BY created_at, name")
        return [_api_key(r) for r in rows]

    async def revoke_api_key(self, name: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM api_keys WHERE name = ?", (name,)).rowcount > 0

        return await self._db.write(delete)

    async def api_key_by_hash(self, secret_hash: str) -> ApiKey | None:
        row = await self._db.lookup_one(
            "SELECT * FROM api_keys WHERE secret_hash = ?", (secret_hash,)
        )
        return _api_key(row) if row else None


def _api_key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        scope=Scope(row["scope"]),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
    )
