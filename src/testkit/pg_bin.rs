//! Which PostgreSQL binaries the throwaway servers run.
//!
//! In order: `SLUICE_PG_BIN` (a directory holding `initdb`, `pg_ctl` and `postgres`); then
//! `SLUICE_TEST_PG=13|14|15|16|17|18`, which picks that major version: the machine's
//! `/usr/lib/postgresql/<major>/bin` when it has one, else the binaries `scripts/pg-fetch`
//! downloads once into `target/pg/<major>/` (run here when they are missing); without either,
//! `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`, then `PATH`.
//!
//! Client tools (`psql`) come from the same directory when it has them, else from the
//! machine's own client (the downloaded server packages carry none), which speaks to every
//! server version the suite runs.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::err;

/// The versions `SLUICE_TEST_PG` may name.
pub const MAJORS: [u32; 6] = [13, 14, 15, 16, 17, 18];

/// The major version `SLUICE_TEST_PG` selects, if set.
pub fn selected_major() -> io::Result<Option<u32>> {
    let Some(value) = std::env::var_os("SLUICE_TEST_PG") else {
        return Ok(None);
    };
    let text = value.to_string_lossy();
    match text.trim().parse::<u32>() {
        Ok(m) if MAJORS.contains(&m) => Ok(Some(m)),
        _ if text.trim().is_empty() => Ok(None),
        _ => Err(err(format!(
            "SLUICE_TEST_PG={text} is not one of 13, 14, 15, 16, 17, 18"
        ))),
    }
}

/// The directory holding the server tools (None: rely on PATH); found once per process.
pub(super) fn bin_dir() -> io::Result<Option<&'static Path>> {
    static BIN: OnceLock<Result<Option<PathBuf>, String>> = OnceLock::new();
    match BIN.get_or_init(|| find().map_err(|e| e.to_string())) {
        Ok(dir) => Ok(dir.as_deref()),
        Err(e) => Err(err(e.clone())),
    }
}

/// A server tool's path (`initdb`, `pg_ctl`, `postgres`).
pub(super) fn server_tool(name: &str) -> io::Result<PathBuf> {
    Ok(bin_dir()?.map_or_else(|| PathBuf::from(name), |d| d.join(name)))
}

/// A client tool's path: from the server's directory when it has one, else the machine's.
pub(super) fn client_tool(name: &str) -> PathBuf {
    let own = bin_dir().ok().flatten().map(|d| d.join(name));
    own.filter(|p| p.is_file())
        .or_else(|| pg_config_bindir().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn find() -> io::Result<Option<PathBuf>> {
    if let Some(dir) = std::env::var_os("SLUICE_PG_BIN") {
        return Ok(Some(PathBuf::from(dir)));
    }
    if let Some(major) = selected_major()? {
        return for_major(major).map(Some);
    }
    if let Some(dir) = pg_config_bindir() {
        return Ok(Some(dir));
    }
    Ok(debian_dirs().pop().map(|(_, bin)| bin))
}

fn has_initdb(dir: &Path) -> bool {
    dir.join("initdb").is_file()
}

fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && has_initdb(&dir)).then_some(dir)
}

/// `/usr/lib/postgresql/<major>/bin` directories with an initdb, oldest first.
fn debian_dirs() -> Vec<(u32, PathBuf)> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_initdb(bin))
        .collect();
    versions.sort();
    versions
}

/// The machine's binaries for `major`, else the cached download (fetched now if missing).
fn for_major(major: u32) -> io::Result<PathBuf> {
    if let Some((_, bin)) = debian_dirs().into_iter().find(|(v, _)| *v == major) {
        return Ok(bin);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/pg-fetch");
    let out = Command::new(&script)
        .arg(major.to_string())
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| err(format!("cannot run {}: {e}", script.display())))?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && has_initdb(&dir) {
        return Ok(dir);
    }
    Err(err(format!(
        "SLUICE_TEST_PG={major}: no PostgreSQL {major} binaries; `scripts/pg-fetch {major}` \
         failed ({}); run it by hand to see why",
        out.status
    )))
}
