use proptest::prelude::*;

use super::*;
use crate::config::Config;
use crate::event::SourceRef;

fn router(extra: &str) -> Router {
    let text = format!(
        r#"
[postgres]
[source]
mode = "trigger"
[delivery]
max_payload_bytes = 2000
{extra}
[apps]
crm = {{ prefixes = ["crm.", "user-management", "role-management"] }}
hrms = {{ prefixes = ["hrms."] }}
finance = {{ prefixes = ["finance."] }}
crm_reports = {{ prefixes = ["crm.reports."] }}
[[tables]]
table = "public.credit_configurations"
type = "credit-configs"
tenant = "tenant_id"
app = {{ operation_code = "operation_code" }}
[[tables]]
table = "roles"
type = "roles"
tenant = "tenant_id"
app = {{ any_of = "permissions" }}
[[tables]]
table = "public.users"
type = "users"
tenant = "tenant_id"
app = {{ fixed = ["crm", "hrms"] }}
invalidate = ["tenant:{{tenant}}:user:{{id}}"]
"#
    );
    let config = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
    Router::compile(&config).unwrap()
}

fn change(table: &str, data: &str) -> Change {
    Change {
        event_id: "cl:1".into(),
        operation: Operation::Insert,
        table: table.into(),
        record_id: Some("r1".into()),
        data: data.to_string(),
        old: None,
        changed_fields: None,
        unchanged_columns: vec![],
        timestamp: "2026-11-22T10:00:00.000000Z".into(),
        source: SourceRef {
            mode: "trigger",
            lsn: None,
            xid: None,
            id: Some(1),
        },
        replay: None,
        fault: None,
    }
}

fn route(r: &Router, c: &Change) -> Vec<Routed> {
    let mut out = Vec::new();
    r.route(c, &mut out, &mut Vec::new());
    out
}

fn channels(routed: &[Routed]) -> Vec<String> {
    routed
        .iter()
        .map(|r| match r {
            Routed::Publish(e) => e.channel.clone(),
            Routed::DeadLetter(d) => format!("dead:{}", d.reason.as_str()),
            Routed::Dropped => "dropped".into(),
        })
        .collect()
}

fn credit(code: &str, tenant: &str) -> Change {
    change(
        "public.credit_configurations",
        &format!(r#"{{"tenant_id": {tenant}, "operation_code": {code}, "credit_cost": 3.00}}"#),
    )
}

#[test]
fn seed_operation_codes_go_to_their_app() {
    let r = router("");
    for (code, app) in [
        ("crm.leads.create", "crm"),
        ("crm.contacts.import", "crm"),
        ("crm.dashboard.access", "crm"),
        ("hrms.employee.onboard", "hrms"),
        ("hrms.payroll.process", "hrms"),
        ("finance.invoice.generate", "finance"),
        ("finance.budget.track", "finance"),
        ("crm.reports.generate", "crm_reports"), // the longest prefix wins
    ] {
        let got = channels(&route(
            &r,
            &credit(&format!("\"{code}\""), "\"tenant-123\""),
        ));
        assert_eq!(got, [format!("{app}:tenant-123:credit-configs")], "{code}");
    }
}

#[test]
fn unknown_and_null_codes_are_unroutable() {
    let r = router("");
    for code in ["\"sales.deal.close\"", "null", "\"\"", "42"] {
        assert_eq!(
            channels(&route(&r, &credit(code, "\"t1\""))),
            ["dead:unroutable"],
            "{code}"
        );
    }
    let r = router("on_unroutable = \"drop\"");
    assert_eq!(
        channels(&route(&r, &credit("\"sales.x\"", "\"t1\""))),
        ["dropped"]
    );
}

#[test]
fn a_role_fans_out_to_every_app_in_its_permissions() {
    let r = router("");
    let role = change(
        "public.roles",
        r#"{"tenant_id": "t-9", "permissions": ["crm.leads.create", "hrms.leave.approve", "crm.contacts.update", null, "other"]}"#,
    );
    assert_eq!(
        channels(&route(&r, &role)),
        ["crm:t-9:roles", "hrms:t-9:roles"]
    );
    let admin = change(
        "public.roles",
        r#"{"tenant_id": "t-9", "permissions": ["user-management"]}"#,
    );
    assert_eq!(channels(&route(&r, &admin)), ["crm:t-9:roles"]);
    let none = change("public.roles", r#"{"tenant_id": "t-9", "permissions": []}"#);
    assert_eq!(channels(&route(&r, &none)), ["dead:unroutable"]);
}

#[test]
fn users_go_to_the_fixed_apps_with_their_cache_keys() {
    let r = router("");
    let out = route(
        &r,
        &change("public.users", r#"{"tenant_id": 77, "email": "a@b"}"#),
    );
    assert_eq!(channels(&out), ["crm:77:users", "hrms:77:users"]);
    let Routed::Publish(e) = &out[1] else {
        panic!()
    };
    assert_eq!(e.invalidate, ["tenant:77:user:r1"]);
    let v: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
    assert_eq!(
        (
            v["app"].as_str(),
            v["tenantId"].as_str(),
            v["dataType"].as_str()
        ),
        (Some("hrms"), Some("77"), Some("users"))
    );
}

#[test]
fn unsafe_and_missing_tenants_are_dead_lettered() {
    let r = router("");
    for (tenant, reason) in [
        ("\"a:b\"", "invalid_tenant"),
        ("\"*\"", "invalid_tenant"),
        ("\"t\\n1\"", "invalid_tenant"),
        ("\"\"", "invalid_tenant"),
        ("\"-lead\"", "invalid_tenant"),
        ("true", "invalid_tenant"),
        ("null", "missing_tenant"),
    ] {
        assert_eq!(
            channels(&route(&r, &credit("\"crm.x\"", tenant))),
            [format!("dead:{reason}")],
            "{tenant}"
        );
    }
}

#[test]
fn oversized_payloads_are_dead_lettered_with_their_channel() {
    let r = router("");
    let big = format!(
        r#"{{"tenant_id": "t1", "operation_code": "crm.x", "blob": "{}"}}"#,
        "x".repeat(3000)
    );
    let out = route(&r, &change("public.credit_configurations", &big));
    let Routed::DeadLetter(d) = &out[0] else {
        panic!()
    };
    assert_eq!(
        (d.reason, d.channel.as_deref()),
        (Reason::PayloadTooLarge, Some("crm:t1:credit-configs"))
    );
}

#[test]
fn an_unconfigured_table_is_unroutable() {
    assert_eq!(
        channels(&route(&router(""), &change("public.other", "{}"))),
        ["dead:unroutable"]
    );
}

proptest! {
    /// Whatever a row holds, no published channel carries a tenant outside the safe pattern.
    #[test]
    fn no_published_channel_holds_an_unsafe_tenant(tenant in any::<String>(), code in "(crm|hrms|x)\\.[a-z]{0,5}") {
        let r = router("");
        let data = serde_json::json!({"tenant_id": tenant, "operation_code": code}).to_string();
        for routed in route(&r, &change("public.credit_configurations", &data)) {
            if let Routed::Publish(e) = routed {
                let parts: Vec<&str> = e.channel.split(':').collect();
                prop_assert_eq!(parts.len(), 3);
                prop_assert!(is_safe_tenant(parts[1]));
                prop_assert_eq!(parts[1], tenant.as_str());
            }
        }
    }

    #[test]
    fn tenants_from_the_contract_pattern_are_safe(t in "[A-Za-z0-9][A-Za-z0-9._-]{0,127}") {
        prop_assert!(is_safe_tenant(&t));
    }

    #[test]
    fn a_pattern_character_anywhere_makes_a_tenant_unsafe(
        head in "[A-Za-z0-9]{1,10}", bad in "[:*? \\n\\t\\[\\]\\x00/]", tail in "[a-z]{0,10}",
    ) {
        let tenant = format!("{head}{bad}{tail}");
        prop_assert!(!is_safe_tenant(&tenant));
    }
}

fn problems(tables: &str) -> Vec<String> {
    let text = format!("[postgres]\n[source]\nmode = \"trigger\"\n[apps]\ncrm = {{ prefixes = [\"crm.\"] }}\n{tables}");
    let config = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
    match Router::compile(&config) {
        Ok(_) => Vec::new(),
        Err(found) => found
            .into_iter()
            .map(|p| format!("{} @ {}", p.message, p.locate))
            .collect(),
    }
}

#[test]
fn compile_reports_every_routing_problem_at_once() {
    let table = |name: &str, extra: &str| {
        format!("[[tables]]\ntable = \"{name}\"\ntype = \"t\"\ntenant = \"tenant_id\"\n{extra}\n")
    };
    let unknown_app = table("a", "app = { fixed = [\"crmm\"] }");
    let bad_var = table(
        "b",
        "app = { operation_code = \"code\" }\nchannel = \"{app}:{tenat}\"",
    );
    let no_tenant = table(
        "c",
        "app = { operation_code = \"code\" }\nchannel = \"{app}:{type}\"",
    );
    let found = problems(&format!("{unknown_app}{bad_var}{no_tenant}"));
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].contains("unknown app \"crmm\""), "{found:#?}");
    assert!(found[1].contains("{tenat}"), "{found:#?}");
    assert!(found[2].contains("{tenant}"), "{found:#?}");
    assert!(problems(&table("d", "app = { operation_code = \"code\" }")).is_empty());
}
