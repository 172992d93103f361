//! What goes into a Redis channel or cache key: the templates (`{app}:{tenant}:{type}`,
//! `tenant:{tenant}:instance:{id}`), parsed once at start, and the rules for the values a row
//! may put into them.
//!
//! A leaf module: the config, the router and the checks all use it, and it uses none of them.
//!
//! # Why values are checked
//!
//! Consumers subscribe with patterns such as `crm:tenant-1:*`. A value with `:`, `*`, `?`, `[`,
//! a space or a control character could make one tenant's channel match another tenant's
//! pattern (a tenant `x:tb` or a record id `x:tb:things` in `{app}:{tenant}:{id}`), and in a
//! Redis Cluster braces choose the hash slot. So a tenant, and a record id a template uses,
//! must be made of letters, digits, `.`, `_` and `-` (a record id may also hold `,`, which
//! joins composite keys), start with a letter or digit, and be at most 128 bytes. Anything
//! else is never escaped (an application would build a different key than Sluice deletes) but
//! dead-lettered (`invalid_tenant`, `invalid_key`), so an operator sees it.

use std::fmt::Write;

/// The longest tenant or record id a channel may carry.
pub const MAX_VALUE_LEN: usize = 128;

/// A tenant that may go into a channel: `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`.
pub fn is_safe_tenant(t: &str) -> bool {
    starts_safe(t) && t.bytes().all(is_name_byte)
}

/// A record id that may go into a channel or cache key: as a tenant, and `,` too
/// (`^[A-Za-z0-9][A-Za-z0-9._,-]{0,127}$`).
pub fn is_safe_key(id: &str) -> bool {
    starts_safe(id) && id.bytes().all(|c| is_name_byte(c) || c == b',')
}

/// Names Sluice puts in channels itself (apps, types): the tenant alphabet, any first character.
pub fn is_safe_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_VALUE_LEN && s.bytes().all(is_name_byte)
}

fn starts_safe(s: &str) -> bool {
    s.len() <= MAX_VALUE_LEN && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')
}

/// A template that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed '{{' in template {0:?}")]
    Unclosed(String),
    #[error("stray '}}' in template {0:?}")]
    Stray(String),
    #[error("unknown placeholder {{{name}}} in {template:?}; use {{app}}, {{tenant}}, {{type}}, {{table}} or {{id}}")]
    Unknown { name: String, template: String },
}

/// A value a template may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    App,
    Tenant,
    Type,
    Table,
    Id,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// The values a template is rendered with.
pub struct Values<'a> {
    pub app: &'a str,
    pub tenant: &'a str,
    pub data_type: &'a str,
    pub table: &'a str,
    pub id: &'a str,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| TemplateError::Unclosed(text.to_string()))?;
            let name = &rest[open + 1..open + close];
            parts.push(Part::Var(match name {
                "app" => Var::App,
                "tenant" => Var::Tenant,
                "type" => Var::Type,
                "table" => Var::Table,
                "id" => Var::Id,
                other => {
                    return Err(TemplateError::Unknown {
                        name: other.to_string(),
                        template: text.to_string(),
                    })
                }
            }));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(TemplateError::Stray(text.to_string()));
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Template { parts })
    }

    pub fn uses(&self, var: Var) -> bool {
        self.parts.contains(&Part::Var(var))
    }

    pub fn render(&self, v: &Values<'_>) -> String {
        let mut out = String::with_capacity(64);
        for part in &self.parts {
            let _ = match part {
                Part::Lit(s) => out.write_str(s),
                Part::Var(Var::App) => out.write_str(v.app),
                Part::Var(Var::Tenant) => out.write_str(v.tenant),
                Part::Var(Var::Type) => out.write_str(v.data_type),
                Part::Var(Var::Table) => out.write_str(v.table),
                Part::Var(Var::Id) => out.write_str(v.id),
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_default_channel() {
        let t = Template::parse("{app}:{tenant}:{type}").unwrap();
        let v = Values {
            app: "crm",
            tenant: "tenant-123",
            data_type: "credit-configs",
            table: "public.t",
            id: "7",
        };
        assert_eq!(t.render(&v), "crm:tenant-123:credit-configs");
        let k = Template::parse("tenant:{tenant}:instance:{id}").unwrap();
        assert_eq!(k.render(&v), "tenant:tenant-123:instance:7");
        assert!(k.uses(Var::Id) && !k.uses(Var::App));
    }

    #[test]
    fn rejects_unknown_and_unbalanced_placeholders() {
        assert!(Template::parse("{app}:{tenat}")
            .unwrap_err()
            .to_string()
            .contains("{tenat}"));
        assert!(Template::parse("{app").is_err());
        assert!(Template::parse("app}").is_err());
    }

    #[test]
    fn a_record_id_is_checked_like_a_tenant_but_may_join_keys() {
        for ok in ["42", "a0eebc99-9c0b-4ef8", "k1,2", "x.y_z"] {
            assert!(is_safe_key(ok), "{ok}");
        }
        for bad in [
            "x:tb:things",
            "*",
            "a b",
            "",
            "-1",
            "{x}",
            "a\nb",
            &"k".repeat(129),
        ] {
            assert!(!is_safe_key(bad), "{bad}");
        }
        assert!(is_safe_tenant("tenant-1") && !is_safe_tenant("t,1") && !is_safe_tenant("x:y"));
        assert!(is_safe_name("-x") && !is_safe_name(""));
    }
}
