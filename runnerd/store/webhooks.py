"""Webhook deliveries: which completed runs still have one to deliver."""

from __future__ import annotations

import sqlite3

from ..models import Run
from .base import Aggregate
from .runs import run_from_row


class Webhooks(Aggregate):
    async def pending_webhooks(self, limit: int, exclude: list[str]) -> list[Run]:
        """Completed runs whose webhook is still to be delivered, oldest first."""
        marks = ", ".join("?" for _ in exclude)
        rows = await self._db.all(
            f"SELECT * FROM runs WHERE webhook_status = 'pending' AND id NOT IN ({marks})"
            " ORDER BY completed_at LIMIT ?",
            (*exclude, limit),
        )
        return [run_from_row(r, self.box) for r in rows]

    async def set_webhook_status(self, run_id: str, status: str) -> None:
        def update(db: sqlite3.Connection) -> None:
            db.execute("UPDATE runs SET webhook_status = ? WHERE id = ?", (status, run_id))

        await self._db.write(update)
