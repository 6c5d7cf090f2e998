-- runnerd's database as it is now (schema version 9): what a new database is made
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
    retry_policy          TEXT,        -- JSON object, or NULL: never retried
    on_success            TEXT,        -- JSON array of runner ids, or NULL
    on_failure            TEXT,        -- JSON array of runner ids, or NULL
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
    image_pull_policy     TEXT,
    trigger               TEXT NOT NULL DEFAULT 'api',  -- api, schedule, retry or chain
    attempt               INTEGER NOT NULL DEFAULT 1,
    retry_of              TEXT,        -- the attempt this one retries
    not_before            INTEGER,     -- pending until then
    schedule_id           TEXT,        -- no foreign key: a run outlives its schedule
    scheduled_for         INTEGER,
    parent_run_id         TEXT,
    retry_policy          TEXT,        -- the runner's when triggered: JSON object, or NULL
    chain_status          TEXT,        -- 'pending': its chained runs are still to be made
    log_incomplete        INTEGER NOT NULL DEFAULT 0, -- 1: its stored log may miss output
    node                  TEXT         -- the Swarm node its container ran on, or NULL
);

CREATE INDEX runs_by_runner ON runs (runner_id, seq);
CREATE INDEX runs_by_runner_status ON runs (runner_id, status, seq);
CREATE INDEX runs_active ON runs (status, seq) WHERE status IN ('pending', 'running');
CREATE UNIQUE INDEX runs_idempotency ON runs (runner_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_webhook_pending ON runs (completed_at) WHERE webhook_status = 'pending';
-- Exactly once: a schedule's slot, a failed attempt's retry and a chain's run of each
-- runner can each be made only once, however often a crash or a race tries again.
CREATE UNIQUE INDEX runs_schedule_slot ON runs (schedule_id, scheduled_for)
    WHERE trigger = 'schedule';
CREATE UNIQUE INDEX runs_retry_of ON runs (retry_of) WHERE retry_of IS NOT NULL;
CREATE UNIQUE INDEX runs_chain ON runs (parent_run_id, runner_id) WHERE trigger = 'chain';
CREATE INDEX runs_by_schedule ON runs (schedule_id, status) WHERE schedule_id IS NOT NULL;
CREATE INDEX runs_delayed ON runs (not_before) WHERE status = 'pending' AND not_before IS NOT NULL;
CREATE INDEX runs_chain_pending ON runs (completed_at) WHERE chain_status = 'pending';
-- The dashboard's Overview: covering for the dashboard's 24 h totals and median (counts and durations read
-- from the index alone); retention's completed_at ranges use it too.
CREATE INDEX runs_outcomes ON runs (completed_at, status, started_at)
    WHERE status IN ('succeeded', 'failed');
CREATE INDEX runs_failed ON runs (completed_at) WHERE status = 'failed';

CREATE TABLE schedules (
    id                        TEXT PRIMARY KEY,
    runner_id                 TEXT NOT NULL REFERENCES runners (id) ON DELETE CASCADE,
    cron                      TEXT NOT NULL,
    timezone                  TEXT NOT NULL,
    enabled                   INTEGER NOT NULL,
    env                       TEXT NOT NULL,  -- encrypted JSON array of [key, value]
    concurrency_policy        TEXT NOT NULL
                              CHECK (concurrency_policy IN ('allow', 'forbid', 'replace')),
    starting_deadline_seconds INTEGER NOT NULL,
    anchor_at                 INTEGER NOT NULL,  -- @every counts from here
    next_run_at               INTEGER,           -- NULL: disabled, or never again
    last_run_at               INTEGER,
    last_run_id               TEXT,
    missed_count              INTEGER NOT NULL DEFAULT 0,
    created_at                INTEGER NOT NULL,
    updated_at                INTEGER NOT NULL
);

CREATE INDEX schedules_by_runner ON schedules (runner_id, created_at);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE enabled AND next_run_at IS NOT NULL;

-- The dashboard's sessions: a row per login, found by the SHA-256 of its cookie's
-- token (never the token), gone with its API key.
CREATE TABLE ui_sessions (
    id           TEXT PRIMARY KEY,
    api_key_id   TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);

CREATE INDEX ui_sessions_by_key ON ui_sessions (api_key_id);
CREATE INDEX ui_sessions_idle ON ui_sessions (last_seen_at);

-- The run history filtered by trigger, or by status and trigger (GET …/runs, the
-- Runner page): one index range per page, as runs_by_runner_status is for a status
-- alone, however rare the matches. Schema 7, hence here.
CREATE INDEX runs_by_runner_trigger ON runs (runner_id, trigger, seq);
CREATE INDEX runs_by_runner_status_trigger ON runs (runner_id, status, trigger, seq);
