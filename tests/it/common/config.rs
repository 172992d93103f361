//! The config the tests run with, one text for every module: the seed tables' routes to the
//! apps `crm`, `hrms` and `finance`, trigger mode unless a test picks one, a 100 ms poll, and
//! HTTP on a port the system picks. [`ConfigText`] changes a part where a test needs to (a
//! shorter timeout, other routes, TLS files); [`config_text`] is the usual case.

/// The apps the seed tables' rows route to.
const APPS: &str = r#"crm = { prefixes = ["crm.", "user-management", "role-management"] }
hrms = { prefixes = ["hrms."] }
finance = { prefixes = ["finance."] }
"#;

/// A route for each seed table.
const ROUTES: &str = r#"[[tables]]
table = "public.credit_configurations"
type = "credit-configs"
tenant = "tenant_id"
app = { operation_code = "operation_code" }
[[tables]]
table = "public.roles"
type = "roles"
tenant = "tenant_id"
app = { any_of = "permissions" }
[[tables]]
table = "public.users"
type = "users"
tenant = "tenant_id"
app = { fixed = ["crm", "hrms"] }
"#;

/// The config the tests run with; `extra` lands in `[source]` and may set other sections after
/// it. Unless `extra` has an `[http]` section, the daemon's HTTP endpoints listen on a port the
/// system picks, never on the default 9750.
pub fn config_text(pg: &str, redis: &str, extra: &str) -> String {
    ConfigText::new(pg, redis).extra(extra).text()
}

/// The tests' config with some part changed; [`ConfigText::text`] writes it out.
#[derive(Clone, Debug)]
pub struct ConfigText {
    pg: String,
    redis: String,
    postgres: String,
    redis_keys: String,
    extra: String,
    apps: String,
    routes: String,
}

impl ConfigText {
    /// The config for PostgreSQL at `pg` and Redis at `redis` (URLs), as [`config_text`] writes.
    pub fn new(pg: &str, redis: &str) -> ConfigText {
        ConfigText {
            pg: pg.into(),
            redis: redis.into(),
            postgres: String::new(),
            redis_keys: String::new(),
            extra: String::new(),
            apps: String::new(),
            routes: ROUTES.into(),
        }
    }

    /// More `[postgres]` keys, one a line.
    pub fn postgres(mut self, keys: &str) -> ConfigText {
        self.postgres += &line(keys);
        self
    }

    /// More `[redis]` keys, one a line.
    pub fn redis(mut self, keys: &str) -> ConfigText {
        self.redis_keys += &line(keys);
        self
    }

    /// Text that lands in `[source]` and may open other sections after it; a `mode = ` line
    /// there replaces trigger mode, an `[http]` section the system-picked port.
    pub fn extra(mut self, extra: &str) -> ConfigText {
        self.extra += &line(extra);
        self
    }

    /// More apps beside `crm`, `hrms` and `finance`.
    pub fn apps(mut self, apps: &str) -> ConfigText {
        self.apps += &line(apps);
        self
    }

    /// These `[[tables]]` routes instead of the seed tables' ones.
    pub fn routes(mut self, routes: &str) -> ConfigText {
        self.routes = line(routes);
        self
    }

    pub fn text(&self) -> String {
        let ConfigText {
            pg,
            redis,
            postgres,
            redis_keys,
            extra,
            apps,
            routes,
        } = self;
        let mode = if extra.contains("mode = ") {
            ""
        } else {
            "mode = \"trigger\"\n"
        };
        let http = if extra.contains("[http]") {
            ""
        } else {
            "[http]\nlisten = \"127.0.0.1:0\"\n"
        };
        format!(
            "[postgres]\nurl = \"{pg}\"\n{postgres}\
             [redis]\nurl = \"{redis}\"\n{redis_keys}\
             [source]\n{mode}poll_interval = \"100ms\"\n{extra}\
             [apps]\n{APPS}{apps}\
             {routes}\
             {http}"
        )
    }
}

/// `text` ending in a newline (none when empty).
fn line(text: &str) -> String {
    if text.is_empty() || text.ends_with('\n') {
        text.into()
    } else {
        format!("{text}\n")
    }
}
