"""Container registries: where images are pulled from, with credentials. The
password is stored encrypted and leaves only through `registry_credentials`."""

from __future__ import annotations

import sqlite3
import uuid

from ..models import ContainerRegistry, now_ms
from .base import Aggregate
from .errors import Conflict, NotFound, conflict_as


class Registries(Aggregate):
    async def create_registry(self, fields: dict[str, str]) -> ContainerRegistry:
        now = now_ms()
        registry_id = str(uuid.uuid4())
        sealed = self.box.encrypt(fields["password"])

        def insert(db: sqlite3.Connection) -> ContainerRegistry:
            with conflict_as(f"name: a container registry named {fields['name']!r} already exists"):
                row = db.execute(
                    "INSERT INTO container_registries (id, name, host, username, password,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
                    (
                        registry_id,
                        fields["name"],
                        fields["host"],
                        fields["username"],
                        sealed,
                        now,
                        now,
                    ),
                ).fetchone()
            return _registry(row)

        return await self._db.write(insert)

    async def get_registry(self, registry_id: str) -> ContainerRegistry | None:
        row = await self._db.lookup_one(
            "SELECT * FROM container_registries WHERE id = ?", (registry_id,)
        )
        return _registry(row) if row else None

    async def list_registries(self) -> list[ContainerRegistry]:
        rows = await self._db.all("SELECT * FROM container_registries ORDER BY created_at, name")
        return [_registry(r) for r in rows]

    async def registry_credentials(self, registry_id: str) -> tuple[str, str, str] | None:
        """(host, username, password) for a pull; the only way the password leaves."""
        row = await self._db.one(
            "SELECT host, username, password FROM container_registries WHERE id = ?",
            (registry_id,),
        )
        if row is None:
            return None
        return row["host"], row["username"], self.box.decrypt(row["password"])

    async def update_registry(self, registry_id: str, fields: dict[str, str]) -> ContainerRegistry:
        """Set the given fields. A new `host` or `username` needs the `password` in
        the same call (else Conflict naming it): the stored password must never
        go to another host, or as another user. Checked in the write itself, so
        no concurrent change slips between the check and the update."""
        columns = [c for c in ("name", "host", "username", "password") if c in fields]
        values = [self.box.encrypt(fields[c]) if c == "password" else fields[c] for c in columns]

        def update(db: sqlite3.Connection) -> ContainerRegistry:
            if "password" not in fields and ("host" in fields or "username" in fields):
                current = db.execute(
                    "SELECT host, username FROM container_registries WHERE id = ?", (registry_id,)
                ).fetchone()
                if current is None:
                    raise NotFound(registry_id)
                changed = [
                    c for c in ("host", "username") if c in fields and fields[c] != current[c]
                ]
                if changed:
                    raise Conflict(
                        f"password: required when {' and '.join(changed)} changes: the "
                        "stored password is never sent to another host or as another user"
                    )
            sets = "".join(f"{c} = ?, " for c in columns)
            with conflict_as(
                f"name: a container registry named {fields.get('name')!r} already exists"
            ):
                row = db.execute(
                    f"UPDATE container_registries SET {sets}updated_at = ? WHERE id = ?"
                    " RETURNING *",
                    (*values, now_ms(), registry_id),
                ).fetchone()
            if row is None:
                raise NotFound(registry_id)
            return _registry(row)

        return await self._db.write(update)

    async def delete_registry(self, registry_id: str) -> None:
        """Refused (Conflict) while a runner uses it."""

        def delete(db: sqlite3.Connection) -> None:
            users = db.execute(
                "SELECT count(*) FROM runners WHERE container_registry_id = ?", (registry_id,)
            ).fetchone()[0]
            if users > 0:
                raise Conflict("the container registry is used by a runner")
            if (
                db.execute("DELETE FROM container_registries WHERE id = ?", (registry_id,)).rowcount
                == 0
            ):
                raise NotFound(registry_id)

        await self._db.write(delete)


def _registry(row: sqlite3.Row) -> ContainerRegistry:
    return ContainerRegistry(
        id=row["id"],
        name=row["name"],
        host=row["host"],
        username=row["username"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
