-- Sluice: tables named by pattern (schema-per-tenant), in both modes. Applied by `sluice setup`
-- after the other files; idempotent.
--
-- A [[tables]] entry such as table = "tenant_*.leads" covers the table leads in every schema
-- whose name matches the glob. Setup captures each one that exists (capture triggers, or the
-- publication and the replica identity the route needs) and writes the patterns into
-- sluice.table_patterns. For tables created later, setup installs (as a superuser only) the
-- event trigger sluice_tables on sluice.on_table_ddl(): at the end of every CREATE TABLE or
-- ALTER TABLE, each new or altered table that matches a pattern and is not captured yet (or
-- whose primary key changed) is captured in the same transaction, so its first row is in.
-- In logical mode the daemon needs nothing more: pgoutput sends the new table's Relation
-- message before its first change, and the daemon routes it by name.
--
-- The function is SECURITY DEFINER: it runs as the superuser who ran setup, because the role
-- running an application's DDL may not own the publication. It does only this, on names it
-- quotes, with a search_path of pg_catalog only. A failure never fails the application's DDL:
-- it is raised as a WARNING and `sluice check` reports the table as not captured.

CREATE TABLE IF NOT EXISTS sluice.table_patterns (
    position     int NOT NULL,     -- the entry's place among the patterns: the first match wins
    schema_like  text NOT NULL,    -- the schema glob as a LIKE pattern
    table_name   text NOT NULL,
    mode         text NOT NULL,    -- 'trigger', 'logical', or 'skip' (a table configured by name)
    publication  text,             -- logical mode
    tenant_column text NOT NULL,   -- '' when the tenant comes from the schema name
    routing      text[] NOT NULL,  -- the columns routing reads (outside the key: REPLICA IDENTITY FULL)
    PRIMARY KEY (schema_like, table_name)
);

-- Captures one table for the first pattern (in setup's order) that matches it: a no-op when it
-- already is, with the same primary key.
CREATE OR REPLACE FUNCTION sluice.cover_table(rel regclass) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p record;
    nsp text;
    name text;
    keys text[];
    args text;
    want text;
    have text;
    ev record;
BEGIN
    SELECT n.nspname, c.relname INTO nsp, name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = rel AND c.relkind IN ('r', 'p') AND NOT c.relispartition;
    IF nsp IS NULL OR nsp = 'sluice' THEN
        RETURN false;
    END IF;
    SELECT * INTO p FROM sluice.table_patterns t WHERE t.table_name = name AND nsp LIKE t.schema_like
    ORDER BY t.position LIMIT 1;
    IF NOT FOUND OR p.mode = 'skip' THEN
        RETURN false;
    END IF;
    SELECT coalesce(array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum)), '{}') INTO keys
    FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
    WHERE i.indrelid = rel AND i.indisprimary;
    IF p.mode = 'logical' THEN
        IF NOT EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication b ON b.oid = r.prpubid
                       WHERE r.prrelid = rel AND b.pubname = p.publication) THEN
            EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', p.publication, rel);
        END IF;
        IF NOT (p.routing <@ keys AND cardinality(keys) > 0)
           AND (SELECT relreplident <> 'f' FROM pg_class WHERE oid = rel) THEN
            EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', rel);
        END IF;
        RETURN true;
    END IF;
    SELECT string_agg(quote_literal(a), ', ') INTO args
    FROM unnest(ARRAY[nsp || '.' || name, p.tenant_column] || keys) a;
    FOR ev IN SELECT * FROM (VALUES
        ('sluice_capture_insert', 'INSERT', 'REFERENCING NEW TABLE AS new_table '),
        ('sluice_capture_update', 'UPDATE', 'REFERENCING OLD TABLE AS old_table NEW TABLE AS new_table '),
        ('sluice_capture_delete', 'DELETE', 'REFERENCING OLD TABLE AS old_table '),
        ('sluice_capture_truncate', 'TRUNCATE', '')) v(tg, op, ref)
    LOOP
        want := format('CREATE TRIGGER %I AFTER %s ON %s %sFOR EACH STATEMENT EXECUTE FUNCTION sluice.capture(%s)',
                       ev.tg, ev.op, rel, ev.ref, args);
        SELECT pg_get_triggerdef(oid) INTO have FROM pg_trigger WHERE tgrelid = rel AND tgname = ev.tg;
        CONTINUE WHEN have IS NOT NULL AND have = want;
        IF have IS NOT NULL THEN
            EXECUTE format('DROP TRIGGER %I ON %s', ev.tg, rel);
        END IF;
        EXECUTE want;
    END LOOP;
    RETURN true;
END
$$;

-- The event trigger's function: every table a CREATE TABLE or ALTER TABLE made or changed.
CREATE OR REPLACE FUNCTION sluice.on_table_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel regclass;
BEGIN
    FOR rel IN
        SELECT DISTINCT c.objid::regclass FROM pg_event_trigger_ddl_commands() c
        WHERE c.classid = 'pg_class'::regclass AND c.object_type = 'table'
    LOOP
        BEGIN
            PERFORM sluice.cover_table(rel);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'sluice: table % matches a [[tables]] pattern but could not be captured: %', rel, SQLERRM;
        END;
    END LOOP;
END
$$;
