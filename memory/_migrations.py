"""Numbered schema migrations. Applied in order, recorded in ``schema_migrations``.

A released migration is never edited: change the schema by appending a new one. The schema
reference in docs/store.md is generated from these (``python -m dramaturg.memory._schema_doc``)
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

M002_CRITIQUE_AND_PAIRS = """
ALTER TABLE llm_calls ADD COLUMN annotations JSON;  -- backend notes, e.g. the sim's planted mistakes

ALTER TABLE episodes ADD COLUMN goal_met BOOLEAN;          -- the verifier's verdict
ALTER TABLE episodes ADD COLUMN user_consistent BOOLEAN;   -- simulator stayed in character
ALTER TABLE episodes ADD COLUMN consistency_detail VARCHAR;

CREATE TABLE critiques (
    critique_id VARCHAR PRIMARY KEY,
    episode_id  VARCHAR NOT NULL,
    turn_idx    INTEGER NOT NULL,              -- the assistant turn critiqued
    target      VARCHAR NOT NULL CHECK (target IN ('original', 'revision', 'candidate')),
    status      VARCHAR NOT NULL CHECK (status IN ('ok', 'failed')),
    overall     DOUBLE,                        -- 1..10; NULL only when status = 'failed'
    scores      JSON,                          -- criterion -> 1..10
    feedback    VARCHAR,
    raw         VARCHAR NOT NULL,              -- the critic's reply exactly as given
    attempts    INTEGER NOT NULL,
    call_id     VARCHAR
);

CREATE TABLE revisions (
    revision_id         VARCHAR PRIMARY KEY,
    episode_id          VARCHAR NOT NULL,
    turn_idx            INTEGER NOT NULL,
    original            VARCHAR NOT NULL,
    revised             VARCHAR NOT NULL,
    critique_id         VARCHAR NOT NULL,      -- the critique that asked for it
    revision_critique_id VARCHAR,              -- the critique of the revision
    original_call_id    VARCHAR,
    revised_call_id     VARCHAR
);

CREATE TABLE judgments (
    judgment_id VARCHAR PRIMARY KEY,
    episode_id  VARCHAR NOT NULL,
    turn_idx    INTEGER NOT NULL,
    source      VARCHAR NOT NULL CHECK (source IN ('revision', 'best_of_n')),
    first_text  VARCHAR NOT NULL,              -- shown as response A
    second_text VARCHAR NOT NULL,              -- shown as response B
    orientation VARCHAR NOT NULL CHECK (orientation IN ('ab', 'ba')),
    status      VARCHAR NOT NULL CHECK (status IN ('ok', 'failed')),
    winner      VARCHAR CHECK (winner IN ('A', 'B', 'tie')),
    reason      VARCHAR,
    raw         VARCHAR NOT NULL,
    attempts    INTEGER NOT NULL,
    call_id     VARCHAR
);

CREATE TABLE checks (
    episode_id VARCHAR NOT NULL,
    turn_idx   INTEGER,                        -- NULL for whole-episode checks
    target     VARCHAR NOT NULL,               -- original | revision | candidate | episode
    name       VARCHAR NOT NULL,
    passed     BOOLEAN NOT NULL,
    detail     VARCHAR
);

CREATE TABLE preference_pairs (
    pair_id          VARCHAR PRIMARY KEY,
    run_id           VARCHAR NOT NULL,
    episode_id       VARCHAR NOT NULL,
    scenario         VARCHAR NOT NULL,
    turn_idx         INTEGER NOT NULL,          -- the assistant turn the pair is about
    prompt           JSON NOT NULL,             -- [{role, content}], system first, ends with user
    chosen           VARCHAR NOT NULL,
    rejected         VARCHAR NOT NULL,
    source           VARCHAR NOT NULL CHECK (source IN ('revision', 'best_of_n')),
    margin           DOUBLE NOT NULL,           -- critic score of chosen minus rejected
    judge_agreement  BOOLEAN NOT NULL,          -- both orders preferred chosen
    checks_passed    BOOLEAN NOT NULL,          -- chosen passes every programmatic check
    chosen_call_id   VARCHAR,
    rejected_call_id VARCHAR,
    judgment_ids     JSON NOT NULL,
    critique_ids     JSON NOT NULL,
    created_at       TIMESTAMP NOT NULL
);

-- Every candidate pair that was judged, including those that made no pair, and why.
CREATE TABLE pair_outcomes (
    episode_id VARCHAR NOT NULL,
    turn_idx   INTEGER NOT NULL,
    source     VARCHAR NOT NULL,
    outcome    VARCHAR NOT NULL CHECK (outcome IN
        ('paired', 'tie', 'inconsistent', 'judge_rejected', 'judge_failed', 'critique_failed',
         'low_margin', 'identical', 'chosen_below_threshold')),
    pair_id    VARCHAR
);
"""

M003_METRICS = """
CREATE TABLE metrics (
    run_id      VARCHAR NOT NULL,
    scenario    VARCHAR,                    -- NULL for run-wide metrics
    name        VARCHAR NOT NULL,           -- e.g. distinct_2_user, sim_pair_correctness
    value       DOUBLE,
    detail      JSON,                       -- counts behind the value, distributions
    computed_at TIMESTAMP NOT NULL
);
"""

M004_CURATION = """
-- Curation marks rows; it never deletes them. Both tables are rewritten for a run each time
-- the run is curated (`dramaturg stats`, or dramaturg.evaluators.curate). No primary keys: the
-- curation writes each (kind, item_id) once, and a key would slow the bulk insert.
CREATE TABLE duplicates (
    kind         VARCHAR NOT NULL CHECK (kind IN ('dialogue', 'pair')),
    item_id      VARCHAR NOT NULL,          -- episode_id of a dialogue, pair_id of a pair
    duplicate_of VARCHAR NOT NULL,          -- the kept item it repeats (never itself a duplicate)
    method       VARCHAR NOT NULL CHECK (method IN ('exact', 'near')),
    similarity   DOUBLE NOT NULL,           -- estimated Jaccard of word bigrams; 1 for exact copies
    run_id       VARCHAR NOT NULL
);

-- One row per (item, reason): an item that fails two filters has two rows.
CREATE TABLE filtered (
    kind    VARCHAR NOT NULL CHECK (kind IN ('dialogue', 'pair')),
    item_id VARCHAR NOT NULL,               -- episode_id of a dialogue, pair_id of a pair
    reason  VARCHAR NOT NULL,               -- too_short | too_long | refusal | role_flip | failed_check
                                            -- | goal_not_met | unverified | judge_disagreement | low_margin
    run_id  VARCHAR NOT NULL,
    detail  VARCHAR                         -- what tripped the filter, e.g. the failed check's name
);
"""

M005_TURN_REJECTIONS = """
-- Generated turns that failed validation before entering the dialogue (a role flip, an echo,
-- meta-commentary, ...). Each was regenerated with another seed; the dialogue holds only
-- turns that passed. An episode whose turn kept failing ends with termination_reason
-- 'invalid_turn' and is left out of exports.
CREATE TABLE turn_rejections (
    episode_id VARCHAR NOT NULL,
    turn_idx   INTEGER NOT NULL,            -- the dialogue position the text was generated for
    kind       VARCHAR NOT NULL CHECK (kind IN ('user', 'assistant', 'revision')),
    attempt    INTEGER NOT NULL,            -- 0 for the first try, then 1, 2, ...
    reason     VARCHAR NOT NULL,            -- empty | truncated | role_flip | echo | meta
                                            -- | copied_instruction | invented_fact
    detail     VARCHAR NOT NULL,            -- what tripped the validator (all problems, '; ')
    content    VARCHAR NOT NULL,            -- the rejected text
    call_id    VARCHAR                      -- the llm_calls row that produced it
);

-- A revision that failed validation on every attempt is dropped (the dialogue keeps the
-- original): a new pair outcome, 'revision_invalid'. DuckDB cannot alter a CHECK, so the
-- table is rebuilt.
CREATE TABLE pair_outcomes_v5 (
    episode_id VARCHAR NOT NULL,
    turn_idx   INTEGER NOT NULL,
    source     VARCHAR NOT NULL,
    outcome    VARCHAR NOT NULL CHECK (outcome IN
        ('paired', 'tie', 'inconsistent', 'judge_rejected', 'judge_failed', 'critique_failed',
         'low_margin', 'identical', 'chosen_below_threshold', 'revision_invalid')),
    pair_id    VARCHAR
);
INSERT INTO pair_outcomes_v5 SELECT * FROM pair_outcomes;
DROP TABLE pair_outcomes;
ALTER TABLE pair_outcomes_v5 RENAME TO pair_outcomes;
"""

M006_TOOLS = """
-- Assistants that call tools. A reply that asked for tool calls stores them with its text,
-- so the cache replays them exactly. llm_calls.role gains a value: tool_simulator (it answers
-- the calls of tools declared by schema only).
ALTER TABLE llm_calls ADD COLUMN tool_calls JSON;     -- [{id, name, arguments}] the reply asked for

-- The rounds of tool calls an assistant turn took before its text, as in the dialogue:
-- [{calls: [{id, name, arguments}], results: [{call_id, content, is_error}]}]; NULL: none.
ALTER TABLE turns ADD COLUMN tool_steps JSON;
ALTER TABLE preference_pairs ADD COLUMN chosen_tool_steps JSON;
ALTER TABLE preference_pairs ADD COLUMN rejected_tool_steps JSON;

-- Every tool call an assistant made, valid or not, in every attempt at a turn.
CREATE TABLE tool_calls (
    episode_id    VARCHAR NOT NULL,
    turn_idx      INTEGER NOT NULL,         -- the assistant turn it belongs to
    target        VARCHAR NOT NULL,         -- original | revision: which version of the turn
    attempt       INTEGER NOT NULL,         -- 0 for the first try at that version, then 1, 2, ...
    seq           INTEGER NOT NULL,         -- order within the episode
    tool_call_id  VARCHAR NOT NULL,         -- the id the model gave the call
    tool          VARCHAR NOT NULL,
    arguments     VARCHAR NOT NULL,         -- as the model wrote them (JSON text, or not)
    status        VARCHAR NOT NULL CHECK (status IN ('ok', 'invalid', 'error')),
                                            -- invalid: unknown tool or arguments that fail the
                                            -- schema (never ran); error: the tool raised
    result        VARCHAR NOT NULL,         -- what the assistant read back
    error         VARCHAR,
    source        VARCHAR NOT NULL CHECK (source IN ('real', 'simulated')),
    latency_ms    DOUBLE NOT NULL,
    model_call_id VARCHAR                   -- the llm_calls row whose reply asked for it
);
"""

M007_RECIPES = """
-- The seed methods as recipes. A turn says where its text came from: 'generated' by a role,
-- 'imported' from an existing conversation (a prefix to continue, a SPIN dialogue), or a
-- 'seed' request from a file that opened the episode verbatim (Baize).
ALTER TABLE turns ADD COLUMN origin VARCHAR DEFAULT 'generated';

-- Self-Refine revises a turn up to --refine-rounds times: 1 for the first revision, then 2, ...
ALTER TABLE revisions ADD COLUMN round INTEGER DEFAULT 1;

-- How each episode opened, when a recipe opened it: a seed request used as is, a meta-topic a
-- model expanded into a request (UltraChat), a request evolved by an Evol-Instruct operator
-- (kept, or dropped with its reason: the episode then opens with the original request), or
-- an imported conversation continued or replayed (SPIN).
CREATE TABLE openings (
    episode_id   VARCHAR NOT NULL,
    kind         VARCHAR NOT NULL CHECK (kind IN ('seed', 'topic', 'evolved', 'imported', 'spin')),
    source_id    VARCHAR,                   -- the seed's or dialogue's id in its file
    source_text  VARCHAR NOT NULL,          -- the seed request, the topic, the imported first turn
    operator     VARCHAR,                   -- evolved: the Evol-Instruct operator
    opening      VARCHAR NOT NULL,          -- what the episode opened with
    kept         BOOLEAN NOT NULL,          -- evolved: false when the evolution was eliminated
    drop_reason  VARCHAR,                   -- why an evolution was eliminated
    call_ids     JSON NOT NULL              -- the model calls that made it ([] for none)
);

-- SPIN pairs: an imported dialogue's real reply (chosen) against the model's own (rejected).
-- DuckDB cannot alter a CHECK, so the table is made again with the new source.
CREATE TABLE preference_pairs_v7 (
    pair_id          VARCHAR PRIMARY KEY,
    run_id           VARCHAR NOT NULL,
    episode_id       VARCHAR NOT NULL,
    scenario         VARCHAR NOT NULL,
    turn_idx         INTEGER NOT NULL,          -- the assistant turn the pair is about
    prompt           JSON NOT NULL,             -- [{role, content}], system first, ends with user
    chosen           VARCHAR NOT NULL,
    rejected         VARCHAR NOT NULL,
    source           VARCHAR NOT NULL CHECK (source IN ('revision', 'best_of_n', 'spin')),
    margin           DOUBLE NOT NULL,           -- critic score of chosen minus rejected
    judge_agreement  BOOLEAN NOT NULL,          -- both orders preferred chosen
    checks_passed    BOOLEAN NOT NULL,          -- chosen passes every programmatic check
    chosen_call_id   VARCHAR,                   -- NULL for an imported (real) reply
    rejected_call_id VARCHAR,
    judgment_ids     JSON NOT NULL,
    critique_ids     JSON NOT NULL,
    created_at       TIMESTAMP NOT NULL,
    chosen_tool_steps   JSON,
    rejected_tool_steps JSON
);
INSERT INTO preference_pairs_v7 SELECT * FROM preference_pairs;
DROP TABLE preference_pairs;
ALTER TABLE preference_pairs_v7 RENAME TO preference_pairs;

-- SPIN's pairs are judged in both orders like every other pair.
CREATE TABLE judgments_v7 (
    judgment_id VARCHAR PRIMARY KEY,
    episode_id  VARCHAR NOT NULL,
    turn_idx    INTEGER NOT NULL,
    source      VARCHAR NOT NULL CHECK (source IN ('revision', 'best_of_n', 'spin')),
    first_text  VARCHAR NOT NULL,              -- shown as response A
    second_text VARCHAR NOT NULL,              -- shown as response B
    orientation VARCHAR NOT NULL CHECK (orientation IN ('ab', 'ba')),
    status      VARCHAR NOT NULL CHECK (status IN ('ok', 'failed')),
    winner      VARCHAR CHECK (winner IN ('A', 'B', 'tie')),
    reason      VARCHAR,
    raw         VARCHAR NOT NULL,
    attempts    INTEGER NOT NULL,
    call_id     VARCHAR
);
INSERT INTO judgments_v7 SELECT * FROM judgments;
DROP TABLE judgments;
ALTER TABLE judgments_v7 RENAME TO judgments;
"""

M008_ANNOTATIONS = """
-- Human review, from the viewer (`dramaturg serve`) or dramaturg.memory.annotate: a verdict on a
-- pair (accept; reject; flip: the rejected reply is the better one) or a free-text tag on an
-- episode or a pair. Rows are never updated or deleted, so the history stays: the latest verdict
-- on a pair is the one in force ('clear' withdraws it), a tag holds until an 'untag' of it.
CREATE SEQUENCE annotation_ids START 1;
CREATE TABLE annotations (
    annotation_id BIGINT PRIMARY KEY DEFAULT nextval('annotation_ids'),  -- the order of writing
    kind          VARCHAR NOT NULL CHECK (kind IN ('pair', 'episode')),
    item_id       VARCHAR NOT NULL,         -- pair_id of a pair, episode_id of an episode
    action        VARCHAR NOT NULL CHECK (action IN ('accept', 'reject', 'flip', 'clear', 'tag', 'untag')),
    tag           VARCHAR,                  -- tag and untag only
    note          VARCHAR,                  -- why, in the annotator's words
    created_at    TIMESTAMP NOT NULL,
    CHECK ((action IN ('tag', 'untag')) = (tag IS NOT NULL)),
    CHECK (kind = 'pair' OR action IN ('tag', 'untag'))   -- episodes are tagged, not judged
);

-- The verdict in force on each judged pair: its latest accept, reject or flip, unless cleared.
CREATE VIEW pair_verdicts AS
SELECT item_id AS pair_id, action AS verdict, note, created_at
FROM annotations
WHERE kind = 'pair' AND action IN ('accept', 'reject', 'flip', 'clear')
QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY annotation_id DESC) = 1 AND action <> 'clear';

-- The tags in force: each (item, tag) whose latest tag/untag is a tag.
CREATE VIEW annotation_tags AS
SELECT kind, item_id, tag, created_at
FROM annotations
WHERE action IN ('tag', 'untag')
QUALIFY row_number() OVER (PARTITION BY kind, item_id, tag ORDER BY annotation_id DESC) = 1
    AND action = 'tag';
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial", M001_INITIAL),
    Migration(2, "critique_and_pairs", M002_CRITIQUE_AND_PAIRS),
    Migration(3, "metrics", M003_METRICS),
    Migration(4, "curation", M004_CURATION),
    Migration(5, "turn_rejections", M005_TURN_REJECTIONS),
    Migration(6, "tools", M006_TOOLS),
    Migration(7, "recipes", M007_RECIPES),
    Migration(8, "annotations", M008_ANNOTATIONS),
)
