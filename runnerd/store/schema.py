"""Making a database, or bringing an older one up to this runnerd's schema."""

from __future__ import annotations

import sqlite3
import uuid
from importlib import resources

from .connection import LOCK_SLICE_MS, write_batch
from .errors import StoreError
from .migrations import MIGRATIONS, SCHEMA_VERSION

# The current schema: what a new database is made from.
SCHEMA = resources.files("runnerd.store").joinpath("schema.sql").read_text(encoding="utf-8")


def statements(script: str) -> list[str]:
    """The statements of an SQL script, each whole (comments may hold `;`)."""
    found, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    return found


def prepare(db: sqlite3.Connection) -> None:
    """Connection settings, then the schema: made, or migrated to this version."""
    db.execute("PRAGMA busy_timeout = 10000")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA foreign_keys = OFF")  # for the migrations (v5 rebuilds a table)
    db.execute(f"PRAGMA busy_timeout = {LOCK_SLICE_MS}")  # begin_write waits longer
    [(ok, error)] = write_batch(db, [make_or_migrate])
    if not ok:
        raise error
    db.execute("PRAGMA foreign_keys = ON")


def make_or_migrate(db: sqlite3.Connection) -> None:
    """Inside the write transaction: a database with no tables gets schema.sql; an
    older one the migrations from its version on."""
    new = db.execute("SELECT 1 FROM sqlite_schema WHERE name = 'meta'").fetchone() is None
    if new:
        for statement in statements(SCHEMA):
            db.execute(statement)
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 1  # schema 1 wrote it with the tables
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the database {db_path(db)} is from a newer runnerd (schema "
            f"{version}, this one knows {SCHEMA_VERSION}); upgrade runnerd"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[target]:
            db.execute(statement)
    if (
        version < SCHEMA_VERSION
        and (broken := db.execute("PRAGMA foreign_key_check").fetchone()) is not None
    ):
        raise StoreError(
            f"the database {db_path(db)} has a {broken[0]} row that refers "
            f"to a missing {broken[2]} row; nothing was migrated"
        )
    db.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )
    db.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('daemon_id', ?)", (str(uuid.uuid4()),)
    )


def db_path(db: sqlite3.Connection) -> str:
    row = db.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row else "?"
