"""All of runnerd's SQL, over SQLite (WAL), by concern:

- connection.py: the connections, group commit, lock waits (how operations run);
- schema.sql + schema.py + migrations.py: what the database is, and how an old
  one becomes it;
- runners.py, runs.py, registries.py, api_keys.py, webhooks.py: one aggregate
  each, its operations and its SQL;
- facade.py: `Store`, the one object callers hold, made of the aggregates;
- protocol.py: `RunStore`, what the scheduler, executor, webhooks and retention
  need of it; memory.py: an in-memory `RunStore` for fast tests.
"""

from __future__ import annotations

from ..models import RUNNER_COLUMNS
from .connection import LOCK_SLICE_MS, WRITE_LOCK_WAIT_SECONDS, Database
from .errors import Conflict, NotFound, StoreError
from .facade import Store
from .migrations import MIGRATIONS, SCHEMA_V1, SCHEMA_VERSION
from .protocol import RunStore
from .runs import IDEMPOTENCY_WINDOW_MS, SealedEnv
from .schema import SCHEMA, db_path

__all__ = [
    "IDEMPOTENCY_WINDOW_MS",
    "LOCK_SLICE_MS",
    "MIGRATIONS",
    "RUNNER_COLUMNS",
    "SCHEMA",
    "SCHEMA_V1",
    "SCHEMA_VERSION",
    "WRITE_LOCK_WAIT_SECONDS",
    "Conflict",
    "Database",
    "NotFound",
    "RunStore",
    "SealedEnv",
    "Store",
    "StoreError",
    "db_path",
]
