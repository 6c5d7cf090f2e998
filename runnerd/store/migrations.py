"""How an older database becomes the current one: schema 1 as runnerd first made
it, and each later version's statements. Kept as they ran, so a database from any
release still migrates; schema.sql is where a new database comes from."""

from __future__ import annotations

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    scope        TEXT NOT NULL CHECK (scope IN ('full', 'read')),
    secret_hash  TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE TABLE IF NOT EXISTS runners (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    image_name      TEXT NOT NULL,
    image_tag       TEXT NOT NULL,
    run_command     TEXT,
    argv            TEXT,              -- JSON array, or NULL
    entrypoint      TEXT,
    timeout_seconds INTEGER NOT NULL,
    instance_type   TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runner_env_variables (
    id         TEXT PRIMARY KEY,
    runner_id  TEXT NOT NULL REFERENCES runners (id) ON DELETE CASCADE,
    env_key    TEXT NOT NULL,
    env_val    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (runner_id, env_key)
);
CREATE TABLE IF NOT EXISTS runs (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    runner_id       TEXT NOT NULL REFERENCES runners (id) ON DELETE CASCADE,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    image           TEXT NOT NULL,
    command         TEXT,
    argv            TEXT,              -- JSON array, or NULL
    entrypoint      TEXT,
    env             TEXT NOT NULL,     -- JSON array of [key, value]
    timeout_seconds INTEGER NOT NULL,
    instance_type   TEXT NOT NULL,
    cpu             REAL NOT NULL,
    mem             INTEGER NOT NULL,
    pids            INTEGER NOT NULL,
    exit_code       INTEGER,
    failure_reason  TEXT,
    error           TEXT,
    container_id    TEXT,
    started_at      INTEGER,
    completed_at    INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_runner ON runs (runner_id, seq);
CREATE INDEX IF NOT EXISTS runs_by_runner_status ON runs (runner_id, status, seq);
CREATE INDEX IF NOT EXISTS runs_active ON runs (status, seq) WHERE status IN ('pending', 'running');
"""

# Each later schema version: the statements that bring the one before it up to it.
MIGRATIONS: dict[int, list[str]] = {
    2: [
        "ALTER TABLE runners ADD COLUMN max_concurrent_runs INTEGER",
        "ALTER TABLE runs ADD COLUMN idempotency_key TEXT",
        "CREATE UNIQUE INDEX runs_idempotency ON runs (runner_id, idempotency_key)"
        " WHERE idempotency_key IS NOT NULL",
    ],
    3: [
        "ALTER TABLE runners ADD COLUMN webhook_url TEXT",
        "ALTER TABLE runs ADD COLUMN webhook_url TEXT",
        # NULL: no webhook; 'pending' (to deliver), 'delivered' or 'failed'
        "ALTER TABLE runs ADD COLUMN webhook_status TEXT",
        "CREATE INDEX runs_webhook_pending ON runs (completed_at) WHERE webhook_status = 'pending'",
        "CREATE INDEX runs_completed ON runs (completed_at)"
        " WHERE status IN ('succeeded', 'failed')",
    ],
    4: [
        "CREATE TABLE container_registries ("
        " id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, host TEXT NOT NULL,"
        " username TEXT NOT NULL, password TEXT NOT NULL,"  # password: encrypted
        " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)",
        "ALTER TABLE runners ADD COLUMN container_registry_id TEXT"
        " REFERENCES container_registries (id)",
        "ALTER TABLE runners ADD COLUMN image_pull_policy TEXT",
        "ALTER TABLE runners ADD COLUMN warmed_at INTEGER",
        "ALTER TABLE runs ADD COLUMN container_registry_id TEXT",
        "ALTER TABLE runs ADD COLUMN image_pull_policy TEXT",
    ],
    # run_command and argv exclude each other in the table itself, so two PATCHes
    # that each set one (each checked against the runner before the other's write)
    # cannot leave both set. SQLite adds a CHECK only by rebuilding the table:
    # migrations run with foreign keys off, so dropping the old one cascades to
    # nothing. A row with both (possible before) keeps run_command, the one runs used.
    5: [
        "CREATE TABLE runners_v5 ("
        " id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, image_name TEXT NOT NULL,"
        " image_tag TEXT NOT NULL, run_command TEXT, argv TEXT, entrypoint TEXT,"
        " timeout_seconds INTEGER NOT NULL, instance_type TEXT NOT NULL,"
        " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
        " max_concurrent_runs INTEGER, webhook_url TEXT,"
        " container_registry_id TEXT REFERENCES container_registries (id),"
        " image_pull_policy TEXT, warmed_at INTEGER,"
        " CONSTRAINT run_command_or_argv CHECK (run_command IS NULL OR argv IS NULL))",
        "INSERT INTO runners_v5 SELECT id, name, image_name, image_tag, run_command,"
        " CASE WHEN run_command IS NULL THEN argv END, entrypoint, timeout_seconds,"
        " instance_type, created_at, updated_at, max_concurrent_runs, webhook_url,"
        " container_registry_id, image_pull_policy, warmed_at FROM runners",
        "DROP TABLE runners",
        "ALTER TABLE runners_v5 RENAME TO runners",
    ],
    # Schedules, retries, delayed runs and chains (#12).
    6: [
        "ALTER TABLE runners ADD COLUMN retry_policy TEXT",
        "ALTER TABLE runners ADD COLUMN on_success TEXT",
        "ALTER TABLE runners ADD COLUMN on_failure TEXT",
        "ALTER TABLE runs ADD COLUMN trigger TEXT NOT NULL DEFAULT 'api'",
        "ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE runs ADD COLUMN retry_of TEXT",
        "ALTER TABLE runs ADD COLUMN not_before INTEGER",
        "ALTER TABLE runs ADD COLUMN schedule_id TEXT",
        "ALTER TABLE runs ADD COLUMN scheduled_for INTEGER",
        "ALTER TABLE runs ADD COLUMN parent_run_id TEXT",
        "ALTER TABLE runs ADD COLUMN retry_policy TEXT",
        "ALTER TABLE runs ADD COLUMN chain_status TEXT",
        "CREATE UNIQUE INDEX runs_schedule_slot ON runs (schedule_id, scheduled_for)"
        " WHERE trigger = 'schedule'",
        "CREATE UNIQUE INDEX runs_retry_of ON runs (retry_of) WHERE retry_of IS NOT NULL",
        "CREATE UNIQUE INDEX runs_chain ON runs (parent_run_id, runner_id) WHERE trigger = 'chain'",
        "CREATE INDEX runs_by_schedule ON runs (schedule_id, status) WHERE schedule_id IS NOT NULL",
        "CREATE INDEX runs_delayed ON runs (not_before)"
        " WHERE status = 'pending' AND not_before IS NOT NULL",
        "CREATE INDEX runs_chain_pending ON runs (completed_at) WHERE chain_status = 'pending'",
        "CREATE TABLE schedules ("
        " id TEXT PRIMARY KEY,"
        " runner_id TEXT NOT NULL REFERENCES runners (id) ON DELETE CASCADE,"
        " cron TEXT NOT NULL, timezone TEXT NOT NULL, enabled INTEGER NOT NULL,"
        " env TEXT NOT NULL,"  # encrypted
        " concurrency_policy TEXT NOT NULL"
        " CHECK (concurrency_policy IN ('allow', 'forbid', 'replace')),"
        " starting_deadline_seconds INTEGER NOT NULL, anchor_at INTEGER NOT NULL,"
        " next_run_at INTEGER, last_run_at INTEGER, last_run_id TEXT,"
        " missed_count INTEGER NOT NULL DEFAULT 0,"
        " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)",
        "CREATE INDEX schedules_by_runner ON schedules (runner_id, created_at)",
        "CREATE INDEX schedules_due ON schedules (next_run_at)"
        " WHERE enabled AND next_run_at IS NOT NULL",
    ],
    # The dashboard's sessions (#13): a row per login, found by the hash of its
    # cookie, gone with its API key.
    7: [
        "CREATE TABLE ui_sessions ("
        " id TEXT PRIMARY KEY,"  # SHA-256 of the cookie's token, never the token
        " api_key_id TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,"
        " created_at INTEGER NOT NULL, last_seen_at INTEGER NOT NULL)",
        "CREATE INDEX ui_sessions_by_key ON ui_sessions (api_key_id)",
        "CREATE INDEX ui_sessions_idle ON ui_sessions (last_seen_at)",
        # The dashboard's Overview: its 24 h totals and median read only this index
        # (it replaces runs_completed, its first column), its latest failures the next.
        "DROP INDEX runs_completed",
        "CREATE INDEX runs_outcomes ON runs (completed_at, status, started_at)"
        " WHERE status IN ('succeeded', 'failed')",
        "CREATE INDEX runs_failed ON runs (completed_at) WHERE status = 'failed'",
        # The Runner page's history filtered by trigger, or by status and trigger
        # (GET …/runs?trigger=&status=): one index range per page, as
        # runs_by_runner_status is for a status alone, however rare the matches.
        "CREATE INDEX runs_by_runner_trigger ON runs (runner_id, trigger, seq)",
        "CREATE INDEX runs_by_runner_status_trigger ON runs (runner_id, status, trigger, seq)",
    ],
    # Podman as an engine (#14): 1 when runnerd knows a run's stored log may miss
    # output (the engine's stream broke, or its copy could not be checked).
    8: [
        "ALTER TABLE runs ADD COLUMN log_incomplete INTEGER NOT NULL DEFAULT 0",
    ],
    # Swarm as a backend: the name of the node a run's container ran on (NULL on
    # plain Docker, and until it is known).
    9: [
        "ALTER TABLE runs ADD COLUMN node TEXT",
    ],
}

SCHEMA_VERSION = max(MIGRATIONS)
