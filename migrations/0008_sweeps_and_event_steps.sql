-- A sweep is recorded when it finishes reading: last_swept_at (0006) is the
-- time every read of the last sweep committed.
ALTER TABLE connections
    -- Assisted connections: Finch's refresh (/introspect's
    -- last_successful_sync, on Finch's clock) the latest queued sweep reads;
    -- a later one queues the next sweep.
    ADD COLUMN swept_finch_sync_at timestamptz;

-- Each step the worker and the DLQ tools took with an event, for its
-- lifecycle in the console: every processing attempt with its outcome, and
-- every replay. webhook_events keeps only the latest of each.
CREATE TABLE webhook_event_steps (
    step_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id  text NOT NULL REFERENCES webhook_events (event_id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    -- processed | retrying | dead_lettered | replayed
    kind      text NOT NULL,
    -- The processing attempt it ended; NULL for a replay.
    attempt   integer,
    -- The error, the dead-letter reason and error, or a remark on success.
    detail    text
);
CREATE INDEX webhook_event_steps_event ON webhook_event_steps (event_id, step_id);
