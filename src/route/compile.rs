//! [`Router::compile`]: the config's routing sections, checked and turned into lookups.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::schema::SchemaTenant;
use super::{Router, Rule, TableRoute, Tenant};
use crate::channel::{is_safe_name, Template, Var};
use crate::config::{qualify, AppRule, Config, TableConfig, TenantFrom};

/// One thing wrong with the routing config: its message, and the dotted path of the key it is
/// about (`apps.crm.prefixes`, `tables[2].channel`), which places it in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RouteProblem {
    pub locate: String,
    pub message: String,
}

fn problem(locate: impl Into<String>, message: String) -> RouteProblem {
    RouteProblem {
        locate: locate.into(),
        message,
    }
}

impl Router {
    /// Checks `[apps]` and `[[tables]]` and compiles them; `Err` holds every problem found.
    pub fn compile(config: &Config) -> Result<Router, Vec<RouteProblem>> {
        let mut problems = app_problems(config);
        let apps: HashMap<&str, Arc<str>> = config
            .apps
            .keys()
            .map(|a| (a.as_str(), Arc::from(a.as_str())))
            .collect();
        let (mut tables, mut patterns) = (HashMap::new(), Vec::new());
        for (i, t) in config.tables.iter().enumerate() {
            let at = |key: &str| format!("tables[{i}] ({}) {key}", t.table);
            if config.tables[..i]
                .iter()
                .any(|o| qualify(&o.table) == qualify(&t.table))
            {
                problems.push(problem(
                    format!("tables[{i}].table"),
                    format!("{}: the table is configured twice", at("table")),
                ));
            }
            match table_route(t, i, &apps, config.apps.is_empty(), &at) {
                Ok(route) if route.pattern => patterns.push(route),
                Ok(route) => {
                    tables.insert(route.table.to_string(), route);
                }
                Err(found) => problems.extend(found),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut prefixes: Vec<(String, Arc<str>)> = config
            .apps
            .iter()
            .flat_map(|(name, app)| {
                app.prefixes
                    .iter()
                    .map(|p| (p.clone(), apps[name.as_str()].clone()))
            })
            .collect();
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(Router {
            tables,
            patterns,
            prefixes,
            max_payload: config.delivery.max_payload_bytes,
            on_unroutable: config.delivery.on_unroutable,
        })
    }
}

fn app_problems(config: &Config) -> Vec<RouteProblem> {
    let mut out = Vec::new();
    for (name, app) in &config.apps {
        if !is_safe_name(name) {
            out.push(problem(
                format!("apps.{name}"),
                format!("apps.{name}: an app name may hold only letters, digits, '.', '_' and '-'"),
            ));
        }
        if app.prefixes.is_empty() || app.prefixes.iter().any(|p| p.is_empty()) {
            out.push(problem(format!("apps.{name}.prefixes"), format!("apps.{name}.prefixes: give at least one non-empty prefix, e.g. prefixes = [\"{name}.\"]")));
        }
    }
    out
}

/// One table's route, or what is wrong with it.
fn table_route(
    t: &TableConfig,
    i: usize,
    apps: &HashMap<&str, Arc<str>>,
    no_apps: bool,
    at: &dyn Fn(&str) -> String,
) -> Result<TableRoute, Vec<RouteProblem>> {
    let mut problems = Vec::new();
    let table = qualify(&t.table);
    let (schema, name) = table.split_once('.').unwrap_or_default();
    if name.contains('*') || schema.is_empty() || name.is_empty() {
        problems.push(problem(
            format!("tables[{i}].table"),
            format!("{}: found {:?}; a * may stand only in the schema part; write it like table = \"tenant_*.leads\"", at("table"), t.table),
        ));
    }
    let tenant = match &t.tenant {
        TenantFrom::Column(c) => Some(Tenant::Column(c.clone())),
        TenantFrom::Schema { schema } => match SchemaTenant::new(schema) {
            Ok(pattern) => Some(Tenant::Schema(pattern)),
            Err(e) => {
                problems.push(problem(
                    format!("tables[{i}].tenant.schema"),
                    format!("{}: {e}; write it like tenant = {{ schema = \"tenant_([a-z0-9][a-z0-9_]*)\" }}", at("tenant.schema")),
                ));
                None
            }
        },
    };
    if !is_safe_name(&t.data_type) {
        problems.push(problem(
            format!("tables[{i}].type"),
            format!(
                "{}: type may hold only letters, digits, '.', '_' and '-'",
                at("type")
            ),
        ));
    }
    let rule = match &t.app {
        AppRule::OperationCode(c) => Rule::OperationCode(c.clone()),
        AppRule::AnyOf(c) => Rule::AnyOf(c.clone()),
        AppRule::Fixed(list) => Rule::Fixed(
            list.iter()
                .filter_map(|a| apps.get(a.as_str()).cloned())
                .collect(),
        ),
    };
    match &t.app {
        AppRule::Fixed(list) => {
            if let Some((n, a)) = list
                .iter()
                .enumerate()
                .find(|(_, a)| !apps.contains_key(a.as_str()))
            {
                problems.push(problem(
                    format!("tables[{i}].app.fixed[{n}]"),
                    format!(
                        "{}: unknown app {a:?}; declare it under [apps]",
                        at("app.fixed")
                    ),
                ));
            }
        }
        _ if no_apps => problems.push(problem(
            format!("tables[{i}].app"),
            format!("{}: routes by prefix but [apps] is empty", at("app")),
        )),
        _ => {}
    }
    let mut parse = |key: String, text: &str| match Template::parse(text) {
        Ok(template) => Some(template),
        Err(e) => {
            let message = format!("{}: {e}", at(key.split('[').next().unwrap_or_default()));
            problems.push(problem(format!("tables[{i}].{key}"), message));
            None
        }
    };
    let channel = parse("channel".into(), &t.channel);
    let invalidate: Vec<Option<Template>> = t
        .invalidate
        .iter()
        .enumerate()
        .map(|(n, k)| parse(format!("invalidate[{n}]"), k))
        .collect();
    if let Some(c) = &channel {
        if !c.uses(Var::Tenant) {
            problems.push(problem(
                format!("tables[{i}].channel"),
                format!(
                    "{}: the channel must contain {{tenant}} so tenants stay apart",
                    at("channel")
                ),
            ));
        }
    }
    let (Some(channel), Some(invalidate), Some(tenant)) = (
        channel,
        invalidate.into_iter().collect::<Option<Vec<_>>>(),
        tenant,
    ) else {
        return Err(dedup(problems));
    };
    if !problems.is_empty() {
        return Err(dedup(problems));
    }
    let uses_id = channel.uses(Var::Id) || invalidate.iter().any(|k| k.uses(Var::Id));
    Ok(TableRoute {
        table: Arc::from(table.as_str()),
        name: name.to_string(),
        pattern: t.is_pattern(),
        data_type: Arc::from(t.data_type.as_str()),
        tenant,
        rule,
        channel,
        invalidate,
        uses_id,
        state: t.state,
    })
}

/// The same template named twice is reported once.
fn dedup(problems: Vec<RouteProblem>) -> Vec<RouteProblem> {
    let mut seen = HashSet::new();
    problems
        .into_iter()
        .filter(|p| seen.insert(p.message.clone()))
        .collect()
}
