-- The event log: one row per Finch event id, the ingress's dedupe key and the
-- outbox from which events reach RabbitMQ.
CREATE TABLE webhook_events (
    -- Finch-Event-Id; the primary key is what makes a redelivery a no-op.
    event_id            text PRIMARY KEY,
    -- NULL when a validly signed body could not be parsed.
    event_type          text,
    -- NULL for payloads that predate connection ids, or that could not be parsed.
    connection_id       text,
    -- Finch-Timestamp of the delivery that was stored first.
    finch_timestamp     timestamptz NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    -- The body exactly as received, byte for byte: the signature covers it.
    body                bytea NOT NULL,
    -- Set when the broker confirmed the message; NULL rows are the outbox.
    published_at        timestamptz,
    -- W3C trace context of the ingress request, carried into the AMQP message
    -- so the worker's span continues the same trace.
    traceparent         text,
    -- Set by the ingress for events routed straight to the dead-letter queue.
    dead_letter_reason  text,
    -- Lifecycle written by the worker and the dead-letter tooling.
    processed_at        timestamptz,
    dead_lettered_at    timestamptz,
    attempts            integer NOT NULL DEFAULT 0,
    replay_count        integer NOT NULL DEFAULT 0
);

-- The outbox relay reads unpublished events oldest first; the partial index
-- stays as small as the backlog.
CREATE INDEX webhook_events_unpublished ON webhook_events (received_at)
    WHERE published_at IS NULL;

CREATE INDEX webhook_events_connection ON webhook_events (connection_id, received_at);
