//! What writers pay for trigger mode: bulk INSERT, UPDATE and DELETE throughput on a table
//! without capture, with Sluice's statement-level capture trigger, and (for comparison) with a
//! row-level trigger that writes the same JSON copy. Runs on a throwaway PostgreSQL.
//!
//! `cargo bench --bench writer_cost` (env `ROWS`, default 100000; `ROUNDS`, default 3).

use std::time::Instant;

use sluice::testkit::Postgres;

const TABLE: &str = "CREATE TABLE public.credit_configurations (
    config_id text PRIMARY KEY, tenant_id text, operation_code text,
    credit_cost numeric(10,2) NOT NULL DEFAULT 1.00, is_active boolean NOT NULL DEFAULT true,
    updated_by text, meta jsonb, updated_at timestamptz NOT NULL DEFAULT now());";

const ROW_TRIGGER: &str = "CREATE FUNCTION row_capture() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO sluice.change_log (table_name, operation, record_id, tenant_id, new_row, old_row)
  VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP,
          coalesce(NEW.config_id, OLD.config_id), coalesce(NEW.tenant_id, OLD.tenant_id),
          CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END, CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END);
  RETURN NULL;
END $$;
CREATE TRIGGER row_capture AFTER INSERT OR UPDATE OR DELETE ON credit_configurations
  FOR EACH ROW EXECUTE FUNCTION row_capture();";

fn main() {
    // `cargo bench` passes --bench; under `cargo test` this is a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let rows: i64 = std::env::var("ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100_000 } else { 2_000 });
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 3 } else { 1 });
    let pg = Postgres::start().expect("start postgres");
    pg.psql("postgres", "CREATE DATABASE bench").unwrap();
    let schema = format!(
        "{}\n{}",
        include_str!("../sql/001_schema.sql"),
        include_str!("../sql/002_change_log.sql")
    );
    pg.psql("bench", &schema).unwrap();
    let statement = sluice::setup::triggers(
        "public.credit_configurations",
        "tenant_id",
        &["config_id".into()],
    );
    let variants: [(&str, &str); 3] = [
        ("no capture", ""),
        ("sluice statement trigger", &statement),
        ("row-level trigger", ROW_TRIGGER),
    ];
    println!("{rows} rows per statement, best of {rounds} rounds, rows/s (overhead vs no capture)");
    println!(
        "{:<26} {:>18} {:>18} {:>18}",
        "", "INSERT", "UPDATE", "DELETE"
    );
    let mut base = [0.0; 3];
    for (i, (name, ddl)) in variants.iter().enumerate() {
        let best = measure(&pg, ddl, rows, rounds);
        if i == 0 {
            base = best;
        }
        let cell = |k: usize| {
            format!(
                "{:>9.0} ({:>+4.0}%)",
                best[k],
                (best[k] / base[k] - 1.0) * 100.0
            )
        };
        println!("{name:<26} {:>18} {:>18} {:>18}", cell(0), cell(1), cell(2));
    }
}

/// Best rows/s over `rounds` for INSERT, UPDATE and DELETE of `rows` rows in one statement each.
fn measure(pg: &Postgres, ddl: &str, rows: i64, rounds: usize) -> [f64; 3] {
    let mut best = [0.0f64; 3];
    for _ in 0..rounds {
        pg.psql("bench", &format!("DROP TABLE IF EXISTS credit_configurations; DROP FUNCTION IF EXISTS row_capture(); {TABLE} {ddl} TRUNCATE sluice.change_log; CHECKPOINT;")).unwrap();
        let statements = [
            format!("INSERT INTO credit_configurations (config_id, tenant_id, operation_code, credit_cost, meta) \
                     SELECT 'k' || g, 'tenant-' || (g % 50), 'crm.leads.create', (g % 1000) / 100.0, jsonb_build_object('g', g) \
                     FROM generate_series(1, {rows}) g"),
            "UPDATE credit_configurations SET credit_cost = credit_cost + 1, updated_by = 'bench'".to_string(),
            "DELETE FROM credit_configurations".to_string(),
        ];
        for (k, sql) in statements.iter().enumerate() {
            let started = Instant::now();
            pg.psql("bench", sql).unwrap();
            best[k] = best[k].max(rows as f64 / started.elapsed().as_secs_f64());
        }
    }
    best
}
