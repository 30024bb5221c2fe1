-- A sweep is recorded when it finishes reading: last_swept_at (0006) is the
-- time every read of the last sweep committed.
ALTER TABLE connections
    -- Assisted connections: Finch's refresh (/introspect's
    -- last_successful_sync, on Finch's clock) the latest queued sweep reads;
    -- a later one queues the next sweep.
    ADD COLUMN swept_finch_sync_at timestamptz;
