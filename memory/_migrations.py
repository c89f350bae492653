"""Numbered schema migrations. Applied in order, recorded in ``schema_migrations``.

A released migration is never edited: change the schema by appending a new one. The schema
reference in docs/store.md is generated from these (``python -m dramaturg.memory.schema_doc``)
and a test checks it is current.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIGRATIONS", "Migration"]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


M001_INITIAL = """
CREATE TABLE runs (
    run_id            VARCHAR PRIMARY KEY,   -- given with --run-id, or generated
    created_at        TIMESTAMP NOT NULL,
    seed              BIGINT NOT NULL,       -- the run seed; episode seeds derive from it
    config            JSON NOT NULL,         -- the full run configuration (no API keys)
    dramaturg_version VARCHAR NOT NULL
);

CREATE TABLE scenarios (
    run_id     VARCHAR NOT NULL,
    name       VARCHAR NOT NULL,
    source     VARCHAR NOT NULL,             -- 'builtin:NAME' or the file path
    definition JSON NOT NULL,                -- the scenario as data (functions by name)
    PRIMARY KEY (run_id, name)
);

CREATE TABLE episodes (
    episode_id         VARCHAR PRIMARY KEY,  -- RUN_ID/SCENARIO/INDEX
    run_id             VARCHAR NOT NULL,
    scenario           VARCHAR NOT NULL,
    idx                INTEGER NOT NULL,     -- index of the episode within its scenario
    seed               BIGINT NOT NULL,      -- the episode seed; same seed, same spec
    status             VARCHAR NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    termination_reason VARCHAR,              -- terminal_stage | user_ended | max_turns | error
    persona            VARCHAR,
    spec               JSON,                 -- the instantiated episode spec
    n_turns            INTEGER,
    role_flips         INTEGER,              -- user-simulator turns that sounded like the assistant
    error              VARCHAR,
    started_at         TIMESTAMP NOT NULL,
    finished_at        TIMESTAMP
);

CREATE TABLE turns (
    episode_id VARCHAR NOT NULL,
    idx        INTEGER NOT NULL,             -- 0-based position in the dialogue
    role       VARCHAR NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content    VARCHAR NOT NULL,
    stage      VARCHAR,                      -- the stage the user simulator was in
    call_id    VARCHAR,                      -- the llm_calls row that produced this text
    role_flip  BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (episode_id, idx)
);

CREATE TABLE llm_calls (
    call_id            VARCHAR PRIMARY KEY,
    request_hash       VARCHAR NOT NULL,     -- 'dh1-sha256:…' (see README, "Exactly-once")
    run_id             VARCHAR,
    episode_id         VARCHAR,
    backend            VARCHAR NOT NULL,     -- 'sim' rows are simulated, never real model output
    model              VARCHAR NOT NULL,
    role               VARCHAR NOT NULL,     -- user_simulator | assistant | critic | verifier
    status             VARCHAR NOT NULL CHECK (status IN ('ok', 'error')),
    error_kind         VARCHAR,
    error              VARCHAR,
    request            JSON NOT NULL,        -- system, messages, params, seed
    response_text      VARCHAR,
    finish_reason      VARCHAR,
    input_tokens       INTEGER NOT NULL DEFAULT 0,
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd           DOUBLE NOT NULL DEFAULT 0,
    latency_ms         DOUBLE NOT NULL,
    attempt            INTEGER NOT NULL DEFAULT 1,
    created_at         TIMESTAMP NOT NULL
);
CREATE INDEX llm_calls_request_hash ON llm_calls (request_hash);
"""

MIGRATIONS: tuple[Migration, ...] = (Migration(1, "initial", M001_INITIAL),)
