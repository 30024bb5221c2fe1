-- Marks left by the dead-letter tooling, so that `events show` can tell an
-- event's whole story (replay_count itself is in 0001).
ALTER TABLE webhook_events
    -- When the latest confirmed replay republished the event to the work exchange.
    ADD COLUMN last_replayed_at timestamptz,
    -- When an operator deleted the event from the DLQ without replaying it.
    ADD COLUMN purged_at        timestamptz;
