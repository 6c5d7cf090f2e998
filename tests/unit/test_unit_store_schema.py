"""A new database (schema.sql) and one migrated from schema 1 are the same database:
tables, columns, keys, CHECKs, indexes and versions."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from runnerd.store import SCHEMA, SCHEMA_V1, SCHEMA_VERSION, Store
from runnerd.store.schema import statements


def normalised(sql: str) -> str:
    """The statement without comments, quotes, case or layout."""
    sql = re.sub(r"--[^\n]*", "", sql).lower().replace('"', "")
    sql = re.sub(r"\s+", " ", sql.replace(" if not exists", ""))
    return re.sub(r"\s*([(),])\s*", r"\1", sql).strip()


def checks(sql: str) -> list[str]:
    """Every CHECK clause of a table's statement, normalised."""
    found = []
    for match in re.finditer(r"check\s*\(", normalised(sql)):
        text, depth = normalised(sql)[match.end() - 1 :], 0
        for i, ch in enumerate(text):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                found.append(text[: i + 1])
                break
    return sorted(found)


def describe(path: Path) -> dict[str, Any]:
    db = sqlite3.connect(path)
    try:
        objects = db.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name"
        ).fetchall()
        tables = [name for kind, name, _, _ in objects if kind == "table"]
        indexes = {
            table: [
                (row, db.execute(f"PRAGMA index_xinfo('{row[1]}')").fetchall())
                for row in db.execute(f"PRAGMA index_list('{table}')").fetchall()
            ]
            for table in tables
        }
        return {
            "objects": [(k, n, t, normalised(s or "")) for k, n, t, s in objects],
            "columns": {t: db.execute(f"PRAGMA table_xinfo('{t}')").fetchall() for t in tables},
            "foreign_keys": {
                t: db.execute(f"PRAGMA foreign_key_list('{t}')").fetchall() for t in tables
            },
            "indexes": {t: sorted(v, key=lambda i: str(i[0][1])) for t, v in indexes.items()},
            "checks": {t: checks(s or "") for k, _, t, s in objects if k == "table"},
            "user_version": db.execute("PRAGMA user_version").fetchone(),
            "schema_version": db.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone(),
        }
    finally:
        db.close()


async def test_a_new_database_equals_one_migrated_from_schema_1(tmp_path: Path) -> None:
    old = tmp_path / "old" / "runnerd.db"
    old.parent.mkdir()
    db = sqlite3.connect(old)
    db.executescript(SCHEMA_V1)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.commit()
    db.close()
    async with Store(old):
        pass
    async with Store(tmp_path / "new" / "runnerd.db"):
        pass

    migrated, new = describe(old), describe(tmp_path / "new" / "runnerd.db")
    for part in migrated:
        assert migrated[part] == new[part], part
    assert new["schema_version"] == (str(SCHEMA_VERSION),)
    # It compares something: every table, with its CHECKs and foreign keys.
    assert {"api_keys", "runners", "runner_env_variables", "runs", "container_registries"} <= set(
        new["columns"]
    )
    assert len(new["checks"]["runners"]) == 1 and len(new["checks"]["runs"]) == 1
    assert new["foreign_keys"]["runners"] and new["indexes"]["runs"]


def test_the_comparison_tells_a_missing_check_apart() -> None:
    plain = "CREATE TABLE t (a TEXT, CONSTRAINT c CHECK (a IS NULL OR (a <> '')))"
    assert checks(plain) == ["(a is null or(a <> ''))"]
    assert normalised(plain) != normalised("CREATE TABLE t (a TEXT)")


def test_schema_sql_splits_into_whole_statements_even_with_semicolons_in_comments() -> None:
    found = statements(SCHEMA)
    assert all(sqlite3.complete_statement(s) for s in found)
    assert sum("CREATE TABLE" in s for s in found) == 8
    tricky = statements("CREATE TABLE a (x); -- a; b\nCREATE TABLE b (y);")
    assert len(tricky) == 2
    db = sqlite3.connect(":memory:")
    for statement in [*found, *tricky]:
        db.execute(statement)  # each one statement: sqlite3 refuses more
    db.close()


def test_schema_sql_ships_in_the_package() -> None:
    from importlib import resources

    assert resources.files("runnerd.store").joinpath("schema.sql").is_file()
