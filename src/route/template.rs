//! Channel and cache-key templates such as `{app}:{tenant}:{type}`, parsed once at start.

use std::fmt::Write;

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
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in template {text:?}"))?;
            let name = &rest[open + 1..open + close];
            parts.push(Part::Var(match name {
                "app" => Var::App,
                "tenant" => Var::Tenant,
                "type" => Var::Type,
                "table" => Var::Table,
                "id" => Var::Id,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}} in {text:?}; use {{app}}, {{tenant}}, {{type}}, {{table}} or {{id}}"
                    ))
                }
            }));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("stray '}}' in template {text:?}"));
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
            .contains("{tenat}"));
        assert!(Template::parse("{app").is_err());
        assert!(Template::parse("app}").is_err());
    }
}
