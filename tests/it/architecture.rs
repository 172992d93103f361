//! The shape of `src`: imports run one way (source → route → publish → checkpoint), so a
//! source only reads and no two modules need each other. Read from the source text: every
//! `crate::<module>` a module's non-test code names is an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file under `dir`, except unit-test files.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().unwrap() != "tests.rs"
        {
            out.push(path);
        }
    }
    out
}

/// The code of a file before its `#[cfg(test)]` module, without comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules each top-level module of `src` names as `crate::<name>`.
fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = Graph::new();
    for path in files(&src) {
        let rel = path.strip_prefix(&src).unwrap();
        let module = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if matches!(module.as_str(), "lib" | "main") {
            continue;
        }
        let uses = graph.entry(module.clone()).or_default();
        let text = code(&path);
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name != module && !name.is_empty() {
                uses.insert(name);
            }
        }
        // `use crate::{a, b::c}` groups
        for (i, _) in text.match_indices("crate::{") {
            let group: String = text[i + 8..].chars().take_while(|c| *c != '}').collect();
            for part in group.split(',') {
                let name = part
                    .trim()
                    .split("::")
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if name != module
                    && !name.is_empty()
                    && name.chars().all(|c| c.is_alphanumeric() || c == '_')
                {
                    uses.insert(name);
                }
            }
        }
    }
    graph
}

/// Files under `src/<dir>` that name one of `forbidden`.
fn naming(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut found = Vec::new();
    for path in files(&root) {
        let text = code(&path);
        for f in forbidden {
            if text.contains(&format!("crate::{f}::"))
                || text.contains(&format!("crate::{f};"))
                || text.contains(&format!("crate::{{{f}"))
            {
                found.push(format!("{} names crate::{f}", path.display()));
            }
        }
    }
    found
}

#[test]
fn a_source_only_reads() {
    let found = naming(
        "source",
        &[
            "route",
            "publish",
            "deliver",
            "checkpoint",
            "pipeline",
            "history",
            "dead_letter",
            "run",
        ],
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn routing_and_config_do_not_import_the_stages_after_them() {
    let found = naming("config", &["route", "publish", "channel"]);
    assert!(found.is_empty(), "{found:#?}");
    let found = naming(
        "route",
        &["publish", "deliver", "checkpoint", "pipeline", "run"],
    );
    assert!(found.is_empty(), "{found:#?}");
}

/// The modules on a cycle through `start`, if any.
fn cycle(graph: &Graph, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == start {
                return Some([path.clone(), vec![start.to_string()]].concat());
            }
            if graph.contains_key(next) && seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

#[test]
fn no_two_modules_import_each_other() {
    let graph = graph();
    assert!(
        graph.contains_key("source") && graph["pipeline"].contains("deliver"),
        "the scan sees the modules: {graph:#?}"
    );
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// `testkit` is behind the `testkit` feature (only tests, benches and examples turn it on), so
/// no module of the daemon may use it: the production build would not compile.
#[test]
fn the_daemon_does_not_use_the_testkit() {
    let users: Vec<String> = graph()
        .into_iter()
        .filter(|(module, uses)| module != "testkit" && uses.contains("testkit"))
        .map(|(module, _)| module)
        .collect();
    assert!(users.is_empty(), "modules using crate::testkit: {users:?}");
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    assert!(lib.contains("#[cfg(any(test, feature = \"testkit\"))]\npub mod testkit;"));
}
