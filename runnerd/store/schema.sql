-- runnerd's database as it is now (schema version 5): what a new database is made
-- from. An older database gets here through migrations.py instead; a test proves
-- both end the same (tests/unit/test_unit_store_schema.py). Change both together.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL                -- schema_version, daemon_id, secret_check
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    scope        TEXT NOT NULL CHECK (scope IN ('full', 'read')),
    secret_hash  TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);

CREATE TABLE container_registries (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    host       TEXT NOT NULL,
    username   TEXT NOT NULL,
    password   TEXT NOT NULL,          -- encrypted
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE runners (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL UNIQUE,
    image_name            TEXT NOT NULL,
    image_tag             TEXT NOT NULL,
    run_command           TEXT,
    argv                  TEXT,        -- JSON array, or NULL
    entrypoint            TEXT,
    timeout_seconds       INTEGER NOT NULL,
    instance_type         TEXT NOT NULL,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    max_concurrent_runs   INTEGER,
    webhook_url           TEXT,
    container_registry_id TEXT REFERENCES container_registries (id),
    image_pull_policy     TEXT,
    warmed_at             INTEGER,
    -- So two PATCHes that each set one cannot leave both set.
    CONSTRAINT run_command_or_argv CHECK (run_command IS NULL OR argv IS NULL)
);

CREATE TABLE runner_env_variables (
    id         TEXT PRIMARY KEY,
    runner_id  TEXT NOT NULL REFERENCES runners (id) ON DELETE CASCADE,
    env_key    TEXT NOT NULL,
    env_val    TEXT NOT NULL,          -- encrypted
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (runner_id, env_key)
);

CREATE TABLE runs (
    seq                   INTEGER PRIMARY KEY AUTOINCREMENT,
    id                    TEXT NOT NULL UNIQUE,
    runner_id             TEXT NOT NULL REFERENCES runners (id) ON DELETE CASCADE,
    status                TEXT NOT NULL
                          CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    image                 TEXT NOT NULL,
    command               TEXT,
    argv                  TEXT,        -- JSON array, or NULL
    entrypoint            TEXT,
    env                   TEXT NOT NULL, -- encrypted JSON array of [key, value]
    timeout_seconds       INTEGER NOT NULL,
    instance_type         TEXT NOT NULL,
    cpu                   REAL NOT NULL,
    mem                   INTEGER NOT NULL,
    pids                  INTEGER NOT NULL,
    exit_code             INTEGER,
    failure_reason        TEXT,
    error                 TEXT,
    container_id          TEXT,
    started_at            INTEGER,
    completed_at          INTEGER,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    idempotency_key       TEXT,
    webhook_url           TEXT,
    webhook_status        TEXT,        -- NULL: no webhook; 'pending', 'delivered' or 'failed'
    container_registry_id TEXT,
    image_pull_policy     TEXT
);

CREATE INDEX runs_by_runner ON runs (runner_id, seq);
CREATE INDEX runs_by_runner_status ON runs (runner_id, status, seq);
CREATE INDEX runs_active ON runs (status, seq) WHERE status IN ('pending', 'running');
CREATE UNIQUE INDEX runs_idempotency ON runs (runner_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_webhook_pending ON runs (completed_at) WHERE webhook_status = 'pending';
CREATE INDEX runs_completed ON runs (completed_at) WHERE status IN ('succeeded', 'failed');
