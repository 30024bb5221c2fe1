-- The operator console: its sign-in sessions, the per-minute tally of what
-- the ingress answered, and the replays it runs in the background.

-- One row per signed-in browser. Only the SHA-256 of the cookie value is
-- kept, so a copy of this table cannot be used to sign in.
CREATE TABLE console_sessions (
    id_digest   bytea PRIMARY KEY,
    -- Sent back with every form; a request without it changes nothing.
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

-- Deliveries answered per minute and outcome (accepted, duplicate,
-- unparseable, or the refusal's reason), added to by every ingress replica.
CREATE TABLE ingress_minute_counts (
    minute      timestamptz NOT NULL,
    outcome     text NOT NULL,
    count       bigint NOT NULL,
    PRIMARY KEY (minute, outcome)
);

-- Dead-letter replays started from the console, with their progress.
CREATE TABLE console_replay_jobs (
    id          bigserial PRIMARY KEY,
    -- The filter as the operator chose it (event_type, connection, reason, since).
    filter      jsonb NOT NULL,
    -- Messages per second.
    rate        integer NOT NULL,
    -- How many matched when the operator confirmed; the replay takes no more.
    expected    bigint NOT NULL,
    replayed    bigint NOT NULL DEFAULT 0,
    skipped     bigint NOT NULL DEFAULT 0,
    -- running, done or failed.
    state       text NOT NULL DEFAULT 'running',
    error       text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
