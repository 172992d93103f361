-- Sluice: partitioned tables, in both modes. Applied by `sluice setup` after the other files;
-- idempotent.
--
-- TRIGGER MODE. A statement aimed at a partition (INSERT INTO leads_2024 ...) fires that
-- partition's statement-level triggers, not its parent's, and PostgreSQL clones only
-- row-level triggers to partitions. So each partition of a captured table carries copies of the
-- table's INSERT, UPDATE and DELETE capture triggers, whose first argument names the captured
-- table: its changes are logged, and routed, as that table's. A statement aimed at the parent
-- fires the parent's triggers only (their transition tables hold the rows of every partition),
-- so nothing is logged twice. TRUNCATE stays the parent's alone: a partition truncated on its
-- own is not captured, as in logical mode (publish_via_partition_root does not replicate it).
--
-- LOGICAL MODE. The publication sends a partition's changes as its root's
-- (publish_via_partition_root), but what an UPDATE or DELETE carries of the old row is decided
-- by the partition's own REPLICA IDENTITY, which is not inherited (PostgreSQL 13 to 17 at
-- least), while pgoutput flags that old row by the root's identity. So a partition of a
-- published table with REPLICA IDENTITY FULL gets FULL too; without it a DELETE arrives flagged
-- as a full old row with every column outside the key NULL (its tenant too).
--
-- sluice.cover_partitions(t) brings t's partitions in line; setup calls it for each configured
-- partitioned table. Setup also creates (when a configured table is partitioned) the event
-- trigger sluice_partitions on sluice.on_ddl_command_end(), which calls it when CREATE TABLE
-- ... PARTITION OF or ALTER TABLE ... ATTACH PARTITION adds a partition to a captured table,
-- in the same transaction, and takes the copies off a detached partition, which would
-- otherwise go on logging its changes as the table it left. Only a superuser may create an
-- event trigger: for another role setup skips it (and says so), and partitions added later are
-- covered when setup runs again. These functions run with the rights of whoever runs the DDL
-- (the owner of the new partition), with a search_path of pg_catalog only.

-- The table a capture trigger logs its changes as: its first argument (tgargs holds the
-- arguments, each ended by a zero byte).
CREATE OR REPLACE FUNCTION sluice.captured_as(args bytea) RETURNS text
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT convert_from(substring(args FROM 1 FOR position('\x00'::bytea IN args) - 1), getdatabaseencoding())
$$;

-- rel and its ancestors that Sluice captures (capture triggers, or a publication), root first.
CREATE OR REPLACE FUNCTION sluice.captured_ancestors(rel regclass) RETURNS SETOF regclass
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.relid FROM pg_partition_tree(pg_partition_root(rel)) t
    WHERE (t.relid = rel OR t.relid IN (SELECT pg_partition_ancestors(rel)))
      AND (EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = t.relid AND g.tgfoid = to_regproc('sluice.capture'))
           OR EXISTS (SELECT 1 FROM pg_publication_rel p WHERE p.prrelid = t.relid))
    ORDER BY t.level
$$;

-- Gives every partition of `captured` (at any depth) copies of its INSERT, UPDATE and DELETE
-- capture triggers, and REPLICA IDENTITY FULL when `captured` is published with it. A copy is
-- the table's trigger definition with the partition in its ON clause; one that differs (the
-- config changed) is replaced.
CREATE OR REPLACE FUNCTION sluice.cover_partitions(captured regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    full_identity boolean := EXISTS (SELECT 1 FROM pg_publication_rel WHERE prrelid = captured)
        AND (SELECT relreplident = 'f' FROM pg_class WHERE oid = captured);
    own_on text := format(' ON %s ', captured);
    part regclass;
    trig record;
    have text;
    want text;
BEGIN
    FOR part IN SELECT relid FROM pg_partition_tree(captured) WHERE relid <> captured ORDER BY level LOOP
        FOR trig IN
            SELECT tgname, pg_get_triggerdef(oid) AS def FROM pg_trigger
            WHERE tgrelid = captured AND tgfoid = to_regproc('sluice.capture')
              AND tgname IN ('sluice_capture_insert', 'sluice_capture_update', 'sluice_capture_delete')
        LOOP
            want := overlay(trig.def PLACING format(' ON %s ', part) FROM position(own_on IN trig.def) FOR length(own_on));
            SELECT pg_get_triggerdef(oid) INTO have FROM pg_trigger WHERE tgrelid = part AND tgname = trig.tgname;
            CONTINUE WHEN have = want;
            IF have IS NOT NULL THEN
                EXECUTE format('DROP TRIGGER %I ON %s', trig.tgname, part);
            END IF;
            EXECUTE want;
        END LOOP;
        IF full_identity AND (SELECT relreplident <> 'f' FROM pg_class WHERE oid = part) THEN
            EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', part);
        END IF;
    END LOOP;
END
$$;

-- Drops the capture trigger copies of tables that are no longer partitions of the table they
-- log as (detached). A copy this role may not drop is left, with a warning: the DDL that
-- brought us here is someone else's and must not fail for it; `sluice check` reports it.
CREATE OR REPLACE FUNCTION sluice.uncover_detached() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    copy record;
BEGIN
    FOR copy IN
        SELECT g.tgrelid::regclass AS rel, g.tgname, c.oid::regclass AS captured
        FROM pg_trigger g
        JOIN pg_class c ON c.relkind = 'p'
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname || '.' || c.relname = sluice.captured_as(g.tgargs)
        WHERE g.tgfoid = to_regproc('sluice.capture') AND g.tgrelid <> c.oid
          AND c.oid NOT IN (SELECT pg_partition_ancestors(g.tgrelid))
    LOOP
        BEGIN
            EXECUTE format('DROP TRIGGER %I ON %s', copy.tgname, copy.rel);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'sluice: % is no longer a partition of %, but its capture trigger % stays: %',
                copy.rel, copy.captured, copy.tgname, SQLERRM;
        END;
    END LOOP;
END
$$;

-- The event trigger's function: covers the partitions of every captured table a CREATE TABLE
-- or ALTER TABLE touched, and uncovers detached ones after an ALTER TABLE of a partitioned
-- table. Other DDL returns at the first query. Its own ALTER TABLE ... REPLICA IDENTITY fires
-- it once more, which then finds nothing left to do.
CREATE OR REPLACE FUNCTION sluice.on_ddl_command_end() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    touched regclass[];
    captured regclass;
BEGIN
    SELECT array_agg(DISTINCT c.objid::regclass) INTO touched
    FROM pg_event_trigger_ddl_commands() c JOIN pg_class k ON k.oid = c.objid
    WHERE c.classid = 'pg_class'::regclass AND (k.relispartition OR k.relkind = 'p');
    IF touched IS NULL THEN
        RETURN;
    END IF;
    FOR captured IN
        SELECT a FROM unnest(touched) t, sluice.captured_ancestors(t) WITH ORDINALITY x(a, n) GROUP BY a ORDER BY min(n)
    LOOP
        PERFORM sluice.cover_partitions(captured);
    END LOOP;
    IF EXISTS (SELECT 1 FROM unnest(touched) t JOIN pg_class k ON k.oid = t WHERE k.relkind = 'p') THEN
        PERFORM sluice.uncover_detached();
    END IF;
END
$$;
