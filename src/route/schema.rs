//! Schema-per-tenant routes: a `[[tables]]` entry whose table names its schema by a glob
//! (`tenant_*.leads`) covers that table in every matching schema, and `tenant = { schema =
//! "tenant_([a-z0-9][a-z0-9_]*)" }` takes the tenant from the schema's name.
//!
//! The pattern is checked when the config is loaded: it must compile, have a capture group
//! (the one named `tenant`, else the first), and that group must be unable to capture anything
//! but a safe tenant (`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`). The last is decided exactly, on
//! the group alone, by walking its DFA side by side with the safe tenant's: a reachable pair
//! where the group accepts and the safe rule does not is a string the group could capture,
//! which the error quotes. (A PostgreSQL name has at most 63 bytes, so the length bound holds.)

use std::collections::{HashMap, VecDeque};

use regex::Regex;
use regex_automata::dfa::{dense, Automaton};
use regex_automata::nfa::thompson;
use regex_automata::util::start;
use regex_automata::Anchored;
use regex_syntax::hir::{Hir, HirKind};

use super::{truncate, Router, TableRoute, Unrouted};
use crate::channel::is_safe_tenant;
use crate::dead_letter::Reason;
use crate::event::Change;
use crate::json;

/// A safe tenant, without the length bound (see the module doc).
const SAFE: &str = "[A-Za-z0-9][A-Za-z0-9._-]*";

/// What is wrong with a `tenant.schema` pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaPatternError {
    #[error("{0:?} is not a valid regular expression: {1}")]
    Syntax(String, String),
    #[error("{0:?} has no capture group to take the tenant from")]
    NoGroup(String),
    #[error("{pattern:?} could capture {capture:?} (from a schema named {schema:?}), which is not a safe tenant (^[A-Za-z0-9][A-Za-z0-9._-]{{0,127}}$)")]
    Unsafe {
        pattern: String,
        capture: String,
        schema: String,
    },
    #[error("{0:?} is too complex to check ({1})")]
    TooComplex(String, String),
}

/// A checked `tenant.schema` pattern.
#[derive(Debug, Clone)]
pub struct SchemaTenant {
    /// Anchored at both ends: it must match the whole schema name.
    regex: Regex,
    group: usize,
}

impl SchemaTenant {
    pub fn new(pattern: &str) -> Result<SchemaTenant, SchemaPatternError> {
        let syntax = |e: &dyn std::fmt::Display| {
            let text = e.to_string();
            let last = text.lines().last().unwrap_or_default().trim();
            let last = last.strip_prefix("error: ").unwrap_or(last).to_string();
            SchemaPatternError::Syntax(pattern.into(), last)
        };
        let hir = regex_syntax::parse(pattern).map_err(|e| syntax(&e))?;
        let regex = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| syntax(&e))?;
        let named = regex.capture_names().position(|n| n == Some("tenant"));
        let group = match (named, regex.captures_len()) {
            (Some(at), _) => at,
            (None, n) if n > 1 => 1,
            _ => return Err(SchemaPatternError::NoGroup(pattern.into())),
        };
        let sub = capture(&hir, group as u32)
            .ok_or_else(|| SchemaPatternError::NoGroup(pattern.into()))?;
        if let Some(capture) =
            unsafe_capture(sub).map_err(|e| SchemaPatternError::TooComplex(pattern.into(), e))?
        {
            let schema = example_schema(pattern, &capture);
            return Err(SchemaPatternError::Unsafe {
                pattern: pattern.into(),
                capture,
                schema,
            });
        }
        Ok(SchemaTenant { regex, group })
    }

    /// The tenant of a schema name, or `None` when the pattern does not match it.
    pub fn tenant<'a>(&self, schema: &'a str) -> Option<&'a str> {
        Some(self.regex.captures(schema)?.get(self.group)?.as_str())
    }
}

/// The sub-expression of capture group `index`.
fn capture(hir: &Hir, index: u32) -> Option<&Hir> {
    match hir.kind() {
        HirKind::Capture(c) if c.index == index => Some(&c.sub),
        HirKind::Capture(c) => capture(&c.sub, index),
        HirKind::Repetition(r) => capture(&r.sub, index),
        HirKind::Concat(subs) | HirKind::Alternation(subs) => {
            subs.iter().find_map(|s| capture(s, index))
        }
        _ => None,
    }
}

/// The shortest string `group` matches that is not a safe tenant, if any.
fn unsafe_capture(group: &Hir) -> Result<Option<String>, String> {
    let build = |hir: &Hir| -> Result<dense::DFA<Vec<u32>>, String> {
        let nfa = thompson::Compiler::new()
            .configure(thompson::Config::new().which_captures(thompson::WhichCaptures::None))
            .build_from_hir(hir)
            .map_err(|e| e.to_string())?;
        dense::Builder::new()
            .configure(dense::Config::new().dfa_size_limit(Some(1 << 20)))
            .build_from_nfa(&nfa)
            .map_err(|e| e.to_string())
    };
    let safe_hir = regex_syntax::parse(SAFE).expect("the safe tenant pattern parses");
    let (g, s) = (build(group)?, build(&safe_hir)?);
    let anchored = start::Config::new().anchored(Anchored::Yes);
    let start = (
        g.start_state(&anchored).map_err(|e| e.to_string())?,
        s.start_state(&anchored).map_err(|e| e.to_string())?,
    );
    // breadth first, so the witness is a shortest one; printable bytes first, so it reads
    let order: Vec<u8> = (0x21..0x7f).chain(0x00..0x21).chain(0x7f..=0xff).collect();
    let mut parent: HashMap<_, Option<(_, u8)>> = HashMap::from([(start, None)]);
    let mut queue = VecDeque::from([start]);
    while let Some(pair @ (gs, ss)) = queue.pop_front() {
        let accepts = |dfa: &dense::DFA<Vec<u32>>, st| dfa.is_match_state(dfa.next_eoi_state(st));
        if accepts(&g, gs) && !accepts(&s, ss) {
            return Ok(Some(witness(&parent, pair)));
        }
        for &b in &order {
            let next = (g.next_state(gs, b), s.next_state(ss, b));
            if g.is_dead_state(next.0) || parent.contains_key(&next) {
                continue;
            }
            parent.insert(next, Some((pair, b)));
            queue.push_back(next);
        }
    }
    Ok(None)
}

fn witness<K: std::hash::Hash + Eq + Copy>(parent: &HashMap<K, Option<(K, u8)>>, end: K) -> String {
    let mut bytes = Vec::new();
    let mut at = end;
    while let Some(Some((from, b))) = parent.get(&at) {
        bytes.push(*b);
        at = *from;
    }
    bytes.reverse();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A schema name the pattern matches whose tenant is `capture`, for the error message: the
/// pattern's literal prefix, then the capture (good enough to read; not a proof).
fn example_schema(pattern: &str, capture: &str) -> String {
    let prefix: String = pattern
        .trim_start_matches('^')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    format!("{prefix}{capture}")
}

/// Where a route takes the tenant from.
#[derive(Debug)]
pub(super) enum Tenant {
    Column(String),
    Schema(SchemaTenant),
}

impl Tenant {
    pub(super) fn column(&self) -> Option<&str> {
        match self {
            Tenant::Column(c) => Some(c),
            Tenant::Schema(_) => None,
        }
    }
}

/// The tenant as written in the row (or taken from the schema), for the dead-letter table
/// (even when unsafe).
pub(super) fn raw_tenant(change: &Change, route: &TableRoute) -> Option<String> {
    let col = match &route.tenant {
        Tenant::Column(col) => col,
        Tenant::Schema(p) => {
            return p
                .tenant(schema_of(&change.table, &route.name)?)
                .map(Into::into)
        }
    };
    let found = json::fields(&change.data, &[col]).ok()?;
    json::scalar_text(found[0]?).ok()?.map(|t| t.into_owned())
}

impl Router {
    /// The `table` label of a change's metrics: a pattern route's pattern (`tenant_*.leads`),
    /// so the number of series stays fixed by the config however many tenants there are.
    pub fn table_label<'a>(&'a self, table: &'a str) -> &'a str {
        match self.lookup(table) {
            Some(route) if route.pattern => &route.table,
            _ => table,
        }
    }

    /// The route of a table: its own entry, else the first pattern whose schema glob matches.
    pub(super) fn lookup(&self, table: &str) -> Option<&TableRoute> {
        self.tables.get(table).or_else(|| {
            self.patterns.iter().find(|r| {
                let schema = schema_of(table, &r.name);
                let glob = r.table.split_once('.').map_or("", |(s, _)| s);
                schema.is_some_and(|s| glob_matches(glob, s))
            })
        })
    }
}

/// The schema of `table` (`schema.name`), whose name part is `name`.
pub(super) fn schema_of<'a>(table: &'a str, name: &str) -> Option<&'a str> {
    table.strip_suffix(name)?.strip_suffix('.')
}

/// The tenant a schema-per-tenant route takes from the change's schema. The pattern was
/// proven at load to capture only safe tenants.
pub(super) fn schema_tenant(
    change: &Change,
    route: &TableRoute,
    pattern: &SchemaTenant,
) -> Result<String, Unrouted> {
    let schema = schema_of(&change.table, &route.name).unwrap_or_default();
    match pattern.tenant(schema) {
        Some(tenant) if is_safe_tenant(tenant) => Ok(tenant.to_string()),
        _ => Err((
            Reason::MissingTenant,
            format!(
                "schema {:?} does not match the route's tenant.schema pattern",
                truncate(schema)
            ),
        )),
    }
}

/// `*` in a schema glob matches any run of characters; everything else matches itself.
pub fn glob_matches(glob: &str, name: &str) -> bool {
    let mut parts = glob.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_tenant_from_the_first_or_named_group() {
        let t = SchemaTenant::new("tenant_([a-z0-9][a-z0-9_]*)").unwrap();
        assert_eq!(t.tenant("tenant_acme"), Some("acme"));
        assert_eq!(t.tenant("tenant_"), None);
        assert_eq!(t.tenant("xtenant_acme"), None, "anchored");
        let t = SchemaTenant::new("(?:t|s)_(?<tenant>[a-z]+)_(v[0-9])").unwrap();
        assert_eq!(t.tenant("s_acme_v2"), Some("acme"));
    }

    #[test]
    fn refuses_a_group_that_could_capture_an_unsafe_tenant() {
        let err = |p: &str| SchemaTenant::new(p).unwrap_err();
        assert!(
            matches!(err("tenant_(.+)"), SchemaPatternError::Unsafe { capture, .. } if capture == "!")
        );
        assert!(
            matches!(err("tenant_([a-z]*)"), SchemaPatternError::Unsafe { capture, .. } if capture.is_empty())
        );
        assert!(
            matches!(err("t_([a-z_:]+)"), SchemaPatternError::Unsafe { capture, .. } if capture == ":")
        );
        assert!(
            matches!(err("t_(_[a-z]+)"), SchemaPatternError::Unsafe { capture, .. } if capture == "_a")
        );
        assert!(matches!(
            err("tenant_[a-z]+"),
            SchemaPatternError::NoGroup(_)
        ));
        assert!(matches!(
            err("tenant_([a-z"),
            SchemaPatternError::Syntax(..)
        ));
        assert!(SchemaTenant::new("tenant_([a-z0-9][a-z0-9_]*)").is_ok());
        assert!(SchemaTenant::new("t_([0-9]+)").is_ok());
    }

    #[test]
    fn globs() {
        assert!(glob_matches("tenant_*", "tenant_1"));
        assert!(glob_matches("tenant_*", "tenant_"));
        assert!(!glob_matches("tenant_*", "tenants"));
        assert!(glob_matches("*_app", "acme_app"));
        assert!(glob_matches("t*_*x", "t1_2x"));
        assert!(!glob_matches("t*_*x", "t1_2"));
        assert!(glob_matches("public", "public"));
        assert!(!glob_matches("public", "publics"));
    }
}
