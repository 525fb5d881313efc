//! Recognising a runner: from the command (`pytest`, `python -m pytest`,
//! `npx vitest`, `go test`, `cargo nextest run`, ... also behind `uv run`
//! and the JS package runners), from the project's files, and the default
//! command for a detected project.
//!
//! One file so the wrappers and markers the table in the parent module
//! describes are written once; detection tries pytest's markers, then
//! `package.json`, `go.mod` and `Cargo.toml`, and reads at most
//! `package.json` and three directory listings.

use std::path::Path;

use super::args::basename;
use super::{PYTEST_MARKERS, Runner};

/// Wrappers that run a tool from the project's environment.
const PY_WRAPPERS: [&str; 6] = ["uv", "poetry", "pipenv", "pdm", "hatch", "rye"];
const JS_WRAPPERS: [&str; 4] = ["npx", "pnpm", "yarn", "bunx"];

impl Runner {
    /// The runner `argv` runs and the index of its first own argument.
    pub fn of_command(argv: &[String]) -> Option<(Runner, usize)> {
        let first = basename(argv.first()?);
        let arg = |i: usize| argv.get(i).map(String::as_str);
        match first {
            "pytest" | "py.test" => return Some((Runner::Pytest, 1)),
            "vitest" => return Some((Runner::Vitest, 1)),
            "jest" => return Some((Runner::Jest, 1)),
            "gotestsum" => return Some((Runner::Go, 1)),
            "go" if arg(1) == Some("test") => return Some((Runner::Go, 2)),
            "cargo" if arg(1) == Some("nextest") && arg(2) == Some("run") => {
                return Some((Runner::Nextest, 3));
            }
            "cargo-nextest" if arg(1) == Some("nextest") && arg(2) == Some("run") => {
                return Some((Runner::Nextest, 3));
            }
            "node" if argv[1..].iter().any(|a| a == "--test") => {
                return Some((Runner::Node, 1));
            }
            _ => {}
        }
        if first.starts_with("python")
            && arg(1) == Some("-m")
            && matches!(arg(2), Some("pytest" | "py.test"))
        {
            return Some((Runner::Pytest, 3));
        }
        if PY_WRAPPERS.contains(&first) && arg(1) == Some("run") {
            return Runner::of_command(&argv[2..]).map(|(r, i)| (r, i + 2));
        }
        if JS_WRAPPERS.contains(&first) {
            // `npx vitest`, `npx --no-install vitest`, `pnpm exec jest`,
            // `yarn jest`.
            let skip = 1 + argv[1..]
                .iter()
                .take_while(|a| a.starts_with('-') || *a == "exec")
                .count();
            if skip >= argv.len() {
                return None;
            }
            return Runner::of_command(&argv[skip..])
                .filter(|(r, _)| matches!(r, Runner::Vitest | Runner::Jest))
                .map(|(r, i)| (r, i + skip));
        }
        None
    }

    /// The runner a project in `root` uses, from its files: pytest's
    /// markers, `package.json` naming vitest or jest (dependencies or
    /// scripts) or a `node --test` script, `go.mod`, `Cargo.toml`.
    pub fn detect(root: &Path) -> Option<Runner> {
        if PYTEST_MARKERS.iter().any(|m| root.join(m).is_file()) || has_pytest_files(root) {
            return Some(Runner::Pytest);
        }
        if let Ok(text) = std::fs::read_to_string(root.join("package.json"))
            && let Some(r) = js_runner(&text)
        {
            return Some(r);
        }
        if root.join("go.mod").is_file() {
            return Some(Runner::Go);
        }
        if root.join("Cargo.toml").is_file() {
            return Some(Runner::Nextest);
        }
        None
    }

    /// What [`Runner::detect`] looks for, for messages.
    pub fn detect_text() -> String {
        format!(
            "{} or test_*.py files (pytest), package.json naming vitest or jest or a `node --test` \
             script, go.mod, Cargo.toml",
            PYTEST_MARKERS.join(", ")
        )
    }

    /// The command that runs every test of a project in `root`; pytest's
    /// runs under `python`, else the root's `.venv/bin/python`, else
    /// `python3`.
    pub fn default_command(self, root: &Path, python: Option<&Path>) -> Vec<String> {
        let v = |s: &[&str]| s.iter().map(|a| a.to_string()).collect();
        match self {
            Runner::Pytest => {
                let venv = root.join(".venv/bin/python");
                let python = match python {
                    Some(p) => p.display().to_string(),
                    None if venv.is_file() => venv.display().to_string(),
                    None => "python3".into(),
                };
                vec![python, "-m".into(), "pytest".into()]
            }
            Runner::Vitest => v(&["npx", "--no-install", "vitest", "run"]),
            Runner::Jest => v(&["npx", "--no-install", "jest"]),
            Runner::Node => v(&["node", "--test"]),
            Runner::Go => v(&["gotestsum", "--", "./..."]),
            Runner::Nextest => v(&["cargo", "nextest", "run"]),
        }
    }
}

/// The runner a `package.json` names: vitest or jest among its
/// dependencies or scripts, or a script running `node --test`.
fn js_runner(package_json: &str) -> Option<Runner> {
    let v: serde_json::Value = serde_json::from_str(package_json).ok()?;
    let has_dep = |name: &str| {
        ["devDependencies", "dependencies"]
            .iter()
            .any(|k| v[k].get(name).is_some())
    };
    let scripts: Vec<&str> = v["scripts"]
        .as_object()
        .map(|o| o.values().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    let in_scripts = |word: &str| scripts.iter().any(|s| s.contains(word));
    if has_dep("vitest") || in_scripts("vitest") {
        Some(Runner::Vitest)
    } else if has_dep("jest") || in_scripts("jest") {
        Some(Runner::Jest)
    } else if in_scripts("node --test") {
        Some(Runner::Node)
    } else {
        None
    }
}

/// `test_*.py` or `*_test.py` files in `root`, `root/tests` or
/// `root/test`.
fn has_pytest_files(root: &Path) -> bool {
    let is_test_file = |name: &str| {
        name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"))
    };
    [root.to_path_buf(), root.join("tests"), root.join("test")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(Result::ok)
        .any(|e| is_test_file(&e.file_name().to_string_lossy()))
}
