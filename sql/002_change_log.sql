-- Sluice trigger mode: the change_log queue, its capture trigger, and what is pending.
--
-- HOW THE READER STAYS LOSS-FREE AND IN RECORD ORDER
--
-- Ids come from a sequence when the row is written, not when its transaction commits, so a
-- reader that remembers "the last id I saw" skips a row whose transaction commits late. Sluice
-- remembers a *snapshot* instead. Each read round takes cur := pg_current_snapshot() and
-- publishes, in id order, every row whose writing transaction (column xid) is visible in cur
-- but was not visible in the previous round's snapshot (done). Then done := cur.
--   * No loss: a transaction still running at cur is not visible in cur, so its rows fall into
--     a later round, whatever their ids. A rolled-back transaction never becomes visible.
--   * Record order: two writers of the same row are serialised by its row lock, so the later
--     writer takes its id after the earlier one committed. Hence, in any snapshot, the visible
--     rows of one record are a prefix (in id order) of that record's history, and publishing
--     each round in id order keeps every record's changes in the order they happened, also
--     when a long transaction holds the xmin horizon between two writers (the "straddle"
--     case that reading xid < xmin in (xid, id) order gets wrong).
-- A round is read in windows of source.batch_size ids, from the smallest id of its new rows to
-- the largest (both found once per round through change_log_xid_idx: xid past done's xmax, or
-- in done's in-progress list); (round, round_after) in sluice.checkpoint records how far into
-- the round Sluice has published. Nothing per row is ever updated.
--
-- The id sequence must not cache values (CACHE 1, the default): with per-session caches a
-- later writer could take a smaller id than an earlier one.
--
-- Changed fields are not stored: Sluice derives them from old_row and new_row when it reads a
-- row (computing them here cost writers ~10 us a row, 40% of an UPDATE's capture cost).
--
-- WHAT WRITERS PAY
-- capture() is a statement-level AFTER trigger with transition tables: one INSERT ... SELECT
-- per statement writes every row of that statement as to_jsonb(row), then one pg_notify per
-- statement (notifications coalesce within a transaction; none where the server allows
-- prepared transactions, see the end of capture()). Measured cost: see README.md,
-- "What writers pay in trigger mode".

CREATE TABLE IF NOT EXISTS sluice.change_log (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid            xid8 NOT NULL DEFAULT pg_current_xact_id(),
    table_name     text NOT NULL,
    operation      text NOT NULL,
    record_id      text,
    tenant_id      text,
    new_row        jsonb,
    old_row        jsonb,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS change_log_xid_idx ON sluice.change_log (xid);

-- Logical mode with source.keep_history: the daemon writes each change it published here too,
-- after Redis acknowledged it and before confirming it to the slot, with the eventId it was
-- published under (event_id) and what a trigger row does not hold (meta: changedFields,
-- unchangedColumns, source); created_at is then the commit time. Such rows are history for
-- `sluice replay change-log`, never a queue: the trigger-mode reader skips them. The unique
-- index makes the re-streamed tail after a crash a no-op; trigger rows (event_id NULL) are
-- not in it and cost writers nothing.
ALTER TABLE sluice.change_log ADD COLUMN IF NOT EXISTS event_id text;
ALTER TABLE sluice.change_log ADD COLUMN IF NOT EXISTS meta jsonb;
CREATE UNIQUE INDEX IF NOT EXISTS change_log_event_id_idx
    ON sluice.change_log (event_id) WHERE event_id IS NOT NULL;
-- BRIN: nearly free for writers, enough for pruning and time windows (rows arrive in time order).
CREATE INDEX IF NOT EXISTS change_log_created_idx ON sluice.change_log USING brin (created_at);

-- The primary key of a row as text (composite keys joined by ','). STABLE, like concat_ws:
-- declared IMMUTABLE it would not be inlined and would cost writers ~10 µs a row.
CREATE OR REPLACE FUNCTION sluice.record_key(r jsonb, keys text[]) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT concat_ws(',', r ->> keys[1], r ->> keys[2], r ->> keys[3], r ->> keys[4])
$$;

-- The capture trigger. Arguments: the table its changes are logged as (the configured table;
-- a partition's copy names its partitioned table, see sql/003_partitions.sql), the tenant
-- column, then the primary-key columns.
-- The SET clauses pin what to_jsonb's text depends on (time zone, interval style, float
-- digits) for the trigger's duration only, so the JSON does not depend on the writer's session
-- and equals what logical mode produces. They cost once per statement, not per row.
CREATE OR REPLACE FUNCTION sluice.capture() RETURNS trigger
LANGUAGE plpgsql
SET TimeZone = 'UTC' SET DateStyle = 'ISO, MDY' SET IntervalStyle = 'postgres' SET extra_float_digits = 1
AS $$
DECLARE
    tbl        text := TG_ARGV[0];
    tenant_col text := TG_ARGV[1];
    key_cols   text[] := TG_ARGV[2:];
BEGIN
    -- "OFFSET 0" keeps each subquery from being flattened: flattened, to_jsonb(row) would be
    -- computed once per reference (three times a row), which tripled the writers' cost.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO sluice.change_log (table_name, operation, record_id, tenant_id, new_row)
        SELECT tbl, 'INSERT', sluice.record_key(r, key_cols), r ->> tenant_col, r
        FROM (SELECT to_jsonb(n.*) AS r FROM new_table n OFFSET 0) s;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO sluice.change_log (table_name, operation, record_id, tenant_id, new_row, old_row)
        SELECT tbl, 'UPDATE', n.k, n.r ->> tenant_col, n.r, o.r
        FROM (SELECT r, sluice.record_key(r, key_cols) AS k
              FROM (SELECT to_jsonb(x.*) AS r FROM new_table x OFFSET 0) a OFFSET 0) n
        LEFT JOIN (SELECT r, sluice.record_key(r, key_cols) AS k
                   FROM (SELECT to_jsonb(x.*) AS r FROM old_table x OFFSET 0) b OFFSET 0) o
               ON o.k = n.k;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO sluice.change_log (table_name, operation, record_id, tenant_id, old_row)
        SELECT tbl, 'DELETE', sluice.record_key(r, key_cols), r ->> tenant_col, r
        FROM (SELECT to_jsonb(o.*) AS r FROM old_table o OFFSET 0) s;
    ELSE
        INSERT INTO sluice.change_log (table_name, operation) VALUES (tbl, 'TRUNCATE');
    END IF;
    -- A transaction that has sent a NOTIFY cannot be PREPAREd, and nothing tells a trigger
    -- whether its transaction will be. So where the server allows prepared transactions
    -- (max_prepared_transactions > 0) no NOTIFY is sent and the daemon finds the rows by its
    -- poll_interval. The setting sluice.notify overrides it: 'on' always notifies (for a
    -- database that never prepares a transaction that writes captured tables, or whose
    -- preparing transactions SET LOCAL sluice.notify = 'off'), 'off' never does.
    IF (CASE coalesce(current_setting('sluice.notify', true), '')
            WHEN 'on' THEN true
            WHEN 'off' THEN false
            ELSE current_setting('max_prepared_transactions') = '0' END) THEN
        PERFORM pg_notify('sluice_change_log', '');
    END IF;
    RETURN NULL;
END
$$;

-- Rows written but not yet published (or dead-lettered), per the checkpoint named 'change_log'.
-- "Not visible in done" is spelled as its two index ranges (xid at or past done's xmax, or in
-- done's in-progress list), like the reader's bounds: as one OR over a join it was a scan of
-- the whole history, which cost the daemon's pending gauge 170 ms at 400,000 rows (now <1 ms).
-- The second branch covers a database whose checkpoint row is missing: everything is pending.
CREATE OR REPLACE VIEW sluice.pending_changes AS
SELECT c.*
FROM sluice.checkpoint k
CROSS JOIN LATERAL (
    SELECT * FROM sluice.change_log WHERE xid >= pg_snapshot_xmax(k.done)
    UNION ALL
    SELECT * FROM sluice.change_log WHERE xid = ANY(ARRAY(SELECT pg_snapshot_xip(k.done)))
) c
WHERE k.name = 'change_log' AND c.event_id IS NULL
  AND NOT (k.round IS NOT NULL AND pg_visible_in_snapshot(c.xid, k.round) AND c.id <= k.round_after)
UNION ALL
SELECT c.*
FROM sluice.change_log c
WHERE c.event_id IS NULL
  AND NOT EXISTS (SELECT 1 FROM sluice.checkpoint k WHERE k.name = 'change_log' AND k.done IS NOT NULL);

INSERT INTO sluice.checkpoint (name, position, done)
VALUES ('change_log', 'start', '1:1:')
ON CONFLICT (name) DO NOTHING;
