-- Fleet-scale freshness: what was last read per connection and product, why
-- a connection is parked and until when, when it is swept next, which worker
-- runs the sweep scheduler, and the entity of every row of the copy.

ALTER TABLE connections
    -- `automated` or `assisted` (from /introspect): assisted connections get no
    -- data webhooks and are swept after each of Finch's weekly refreshes.
    ADD COLUMN kind             text NOT NULL DEFAULT 'automated',
    -- The entities /introspect lists; with more than one, every read names one.
    ADD COLUMN entity_ids       text[] NOT NULL DEFAULT '{}',
    -- The failure class that stopped the worker reading this connection, and since when.
    ADD COLUMN parked_reason    text,
    ADD COLUMN parked_at        timestamptz,
    -- When the worker tries again by itself; NULL: only a reconnect or an operator resumes it.
    ADD COLUMN resume_at        timestamptz,
    -- Parks in a row of the same class: each one backs off further.
    ADD COLUMN park_count       integer NOT NULL DEFAULT 0,
    -- A provider's rate limit (429 upstream_rate_limit_exceeded): no request before then.
    ADD COLUMN paused_until     timestamptz,
    -- When the reconciliation sweep is due, and when the last one was queued.
    ADD COLUMN next_sweep_at    timestamptz,
    ADD COLUMN last_swept_at    timestamptz,
    -- Finch's own latest refresh of the connection (a completed data sync job,
    -- or /introspect's last_successful_sync for assisted connections).
    ADD COLUMN finch_synced_at  timestamptz;

CREATE INDEX connections_next_sweep ON connections (next_sweep_at);
CREATE INDEX connections_resume ON connections (resume_at) WHERE resume_at IS NOT NULL;

-- Watermarks: per connection and product, the last successful read and the
-- last failed one. Payments are reread from `read_through` minus an overlap.
CREATE TABLE finch_watermarks (
    connection_id      text NOT NULL,
    product            text NOT NULL,
    -- When a read of this product last committed.
    last_success_at    timestamptz,
    -- Finch-Data-Retrieved of that read: how fresh Finch's copy was.
    data_retrieved_at  timestamptz,
    -- Payments only: every pay date up to here has been read.
    read_through       date,
    last_error         text,
    last_error_at      timestamptz,
    PRIMARY KEY (connection_id, product)
);

-- The scheduler's lease: one worker at a time sweeps and resumes connections.
CREATE TABLE worker_leases (
    name               text PRIMARY KEY,
    holder             text NOT NULL,
    expires_at         timestamptz NOT NULL
);

-- Which of a multi-entity connection's entities a row belongs to ('' when
-- the connection names none). A company is one row per entity.
ALTER TABLE finch_company ADD COLUMN entity_id text NOT NULL DEFAULT '';
ALTER TABLE finch_company DROP CONSTRAINT finch_company_pkey;
ALTER TABLE finch_company ADD PRIMARY KEY (connection_id, entity_id);
ALTER TABLE finch_directory ADD COLUMN entity_id text NOT NULL DEFAULT '';
ALTER TABLE finch_individuals ADD COLUMN entity_id text NOT NULL DEFAULT '';
ALTER TABLE finch_employments ADD COLUMN entity_id text NOT NULL DEFAULT '';
ALTER TABLE finch_payments ADD COLUMN entity_id text NOT NULL DEFAULT '';
ALTER TABLE finch_pay_statements ADD COLUMN entity_id text NOT NULL DEFAULT '';
