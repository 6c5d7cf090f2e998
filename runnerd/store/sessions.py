"""The dashboard's sessions: made at login, found by the hash of the cookie's token,
ended by logout, by idling past `[ui] session_hours`, or with their API key (the
foreign key cascades, and a lookup joins the key, so a revoked key's session is
never found again even for a moment)."""

from __future__ import annotations

import sqlite3

from ..models import Scope, UiSession
from .base import Aggregate

_SELECT = (
    "SELECT s.id, s.api_key_id, s.created_at, s.last_seen_at, k.name AS key_name, k.scope"
    " FROM ui_sessions s JOIN api_keys k ON k.id = s.api_key_id"
)


class UiSessions(Aggregate):
    async def create_session(self, token_hash: str, api_key_id: str, now: int) -> None:
        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO ui_sessions (id, api_key_id, created_at, last_seen_at)"
                " VALUES (?, ?, ?, ?)",
                (token_hash, api_key_id, now, now),
            )

        await self._db.write(insert)

    async def session_by_hash(self, token_hash: str, idle_since: int) -> UiSession | None:
        """The session, if its key still exists and it was seen at `idle_since` or later."""
        row = await self._db.lookup_one(
            _SELECT + " WHERE s.id = ? AND s.last_seen_at >= ?", (token_hash, idle_since)
        )
        return _session(row) if row else None

    async def touch_session(self, token_hash: str, now: int) -> None:
        def update(db: sqlite3.Connection) -> None:
            db.execute("UPDATE ui_sessions SET last_seen_at = ? WHERE id = ?", (now, token_hash))

        await self._db.write(update)

    async def delete_session(self, token_hash: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM ui_sessions WHERE id = ?", (token_hash,)).rowcount > 0

        return await self._db.write(delete)

    async def delete_idle_sessions(self, idle_before: int) -> int:
        def delete(db: sqlite3.Connection) -> int:
            return db.execute(
                "DELETE FROM ui_sessions WHERE last_seen_at < ?", (idle_before,)
            ).rowcount

        return await self._db.write(delete)


def _session(row: sqlite3.Row) -> UiSession:
    return UiSession(
        id=row["id"],
        api_key_id=row["api_key_id"],
        key_name=row["key_name"],
        scope=Scope(row["scope"]),
        created_at=row["created_at"],
        last_seen_at=row["last_seen_at"],
    )
