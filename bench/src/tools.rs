//! The external tools the bench drives (sqlite3, psql, wrk): found on
//! PATH, else installed from Debian's packages when allowed.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::progress;

/// A command on PATH, if there is one.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Makes sure `tool` is installed: finds it on PATH, else installs the apt
/// package `package` (as root, unless `install` is false).
pub fn ensure_tool(tool: &str, package: &str, install: bool) -> anyhow::Result<PathBuf> {
    if let Some(p) = on_path(tool) {
        return Ok(p);
    }
    let how = format!("install it with `apt-get install -y {package}` (as root) and run again");
    if !install {
        bail!("{tool} is not installed; {how}");
    }
    if on_path("apt-get").is_none() {
        bail!("{tool} is not installed and there is no apt-get here; {how}");
    }
    progress!("{tool} is missing: apt-get install -y {package}");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !apt(&["install", "-y", package]) {
        // A fresh container has no package lists yet.
        let _ = apt(&["update"]);
        if !apt(&["install", "-y", package]) {
            bail!("apt-get could not install {package} (not root, or no network?); {how}");
        }
    }
    on_path(tool).with_context(|| format!("{package} was installed but {tool} is not on PATH"))
}
