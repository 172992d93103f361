-- Sluice: the SQL objects every mode needs. Applied by `sluice setup`; idempotent.

CREATE SCHEMA IF NOT EXISTS sluice;

-- One row per source: how far it has published.
--   position   human-readable summary (an LSN in logical mode; a snapshot in trigger mode)
--   done       trigger mode: every change_log row written by a transaction visible in this
--              snapshot has been published (or dead-lettered)
--   round      trigger mode: the snapshot of the round in progress, if any ...
--   round_after  ... of whose new rows those with id <= round_after are already published
CREATE TABLE IF NOT EXISTS sluice.checkpoint (
    name        text PRIMARY KEY,
    position    text NOT NULL,
    done        pg_snapshot,
    round       pg_snapshot,
    round_after bigint,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The last failure the daemon of this source recovered from or stopped on, for `sluice status`
-- (which works while the daemon is down). Written when PostgreSQL is reachable again.
ALTER TABLE sluice.checkpoint ADD COLUMN IF NOT EXISTS last_error text;
ALTER TABLE sluice.checkpoint ADD COLUMN IF NOT EXISTS last_error_at timestamptz;

-- Events that could not be delivered for a reason of their own.
CREATE TABLE IF NOT EXISTS sluice.dead_letter (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    event_id        text NOT NULL,
    channel         text,
    app             text,
    tenant_id       text,
    table_name      text NOT NULL,
    payload         jsonb NOT NULL,
    reason          text NOT NULL,
    error           text,
    attempts        integer NOT NULL DEFAULT 1,
    last_attempt_at timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz
);
-- A payload that jsonb cannot hold (a json value with \u0000, a lone surrogate escape) is kept
-- in payload_text instead, byte for byte, so parking it can never fail.
ALTER TABLE sluice.dead_letter ALTER COLUMN payload DROP NOT NULL;
ALTER TABLE sluice.dead_letter ADD COLUMN IF NOT EXISTS payload_text text;

-- t as jsonb, or NULL when jsonb rejects it (for the dead-letter insert: one exception block
-- per dead letter, which are rare; never on the path of published changes).
CREATE OR REPLACE FUNCTION sluice.jsonb_or_null(t text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN t::jsonb;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;

CREATE INDEX IF NOT EXISTS dead_letter_open_idx
    ON sluice.dead_letter (reason, created_at) WHERE resolved_at IS NULL;
