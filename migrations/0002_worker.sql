-- The worker's tables: connections with their encrypted tokens, the copy of
-- each connection's Finch data (our public contract with applications), the
-- shared rate budget and the outbox of `finch.synced` notifications.

-- Why the last attempt at an event failed (retried or dead-lettered).
ALTER TABLE webhook_events ADD COLUMN last_error text;

CREATE TABLE connections (
    connection_id      text PRIMARY KEY,
    -- AES-256-GCM: 12-byte nonce followed by ciphertext and tag.
    access_token       bytea NOT NULL,
    -- Which key encrypted the token, so keys can be rotated one row at a time.
    token_key_id       text NOT NULL,
    provider_id        text,
    products           text[] NOT NULL DEFAULT '{}',
    -- Finch's connection status: connected, pending, processing, reauth,
    -- error_permissions, error_no_account_setup, disconnected.
    status             text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    last_event_at      timestamptz,
    last_synced_at     timestamptz,
    last_error         text
);

-- Every data table: keyed by connection and Finch id(s); `data` is the item
-- exactly as Finch returned it; `data_retrieved_at` is Finch-Data-Retrieved
-- (when Finch read it from the provider); `fetched_at` is when we asked;
-- `deleted_at` is set once Finch confirmed the item is gone.
CREATE TABLE finch_company (
    connection_id      text PRIMARY KEY,
    data               jsonb NOT NULL,
    data_retrieved_at  timestamptz,
    fetched_at         timestamptz NOT NULL,
    deleted_at         timestamptz
);

CREATE TABLE finch_directory (
    connection_id      text NOT NULL,
    individual_id      text NOT NULL,
    data               jsonb NOT NULL,
    data_retrieved_at  timestamptz,
    fetched_at         timestamptz NOT NULL,
    deleted_at         timestamptz,
    PRIMARY KEY (connection_id, individual_id)
);

CREATE TABLE finch_individuals (
    connection_id      text NOT NULL,
    individual_id      text NOT NULL,
    data               jsonb NOT NULL,
    data_retrieved_at  timestamptz,
    fetched_at         timestamptz NOT NULL,
    deleted_at         timestamptz,
    PRIMARY KEY (connection_id, individual_id)
);

CREATE TABLE finch_employments (
    connection_id      text NOT NULL,
    individual_id      text NOT NULL,
    data               jsonb NOT NULL,
    data_retrieved_at  timestamptz,
    fetched_at         timestamptz NOT NULL,
    deleted_at         timestamptz,
    PRIMARY KEY (connection_id, individual_id)
);

CREATE TABLE finch_payments (
    connection_id      text NOT NULL,
    payment_id         text NOT NULL,
    data               jsonb NOT NULL,
    data_retrieved_at  timestamptz,
    fetched_at         timestamptz NOT NULL,
    deleted_at         timestamptz,
    PRIMARY KEY (connection_id, payment_id)
);

CREATE TABLE finch_pay_statements (
    connection_id      text NOT NULL,
    payment_id         text NOT NULL,
    individual_id      text NOT NULL,
    data               jsonb NOT NULL,
    data_retrieved_at  timestamptz,
    fetched_at         timestamptz NOT NULL,
    deleted_at         timestamptz,
    PRIMARY KEY (connection_id, payment_id, individual_id)
);

-- Results of the jobs that job.* events announce.
CREATE TABLE finch_jobs (
    connection_id      text NOT NULL,
    job_id             text NOT NULL,
    kind               text NOT NULL,
    status             text,
    data               jsonb NOT NULL,
    fetched_at         timestamptz NOT NULL,
    PRIMARY KEY (connection_id, job_id)
);

-- Shared rate budget: one row per Finch product, locked while a worker takes
-- a request from it, and a log of the requests in the sliding window.
CREATE TABLE finch_rate_limits (
    product            text PRIMARY KEY,
    -- Set after a 429: nobody calls this product before then.
    blocked_until      timestamptz
);

CREATE TABLE finch_rate_requests (
    product            text NOT NULL,
    sent_at            timestamptz NOT NULL
);
CREATE INDEX finch_rate_requests_window ON finch_rate_requests (product, sent_at);

-- Notifications committed with the data they announce; deleted once the
-- broker confirmed them, so a crash between commit and publish loses none.
CREATE TABLE finch_sync_outbox (
    id                 bigserial PRIMARY KEY,
    routing_key        text NOT NULL,
    body               jsonb NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);
