//! Reading the test command's JUnit report files: expanding `--junit` and
//! `upload`'s globs, telling files this run wrote from stale ones, and
//! parsing and merging what was found.
//!
//! Kept apart from the subcommands because `run`, its retries and `upload`
//! all read reports the same way; every problem with a file is collected as
//! a sentence (never a panic) so the caller can say it and decide the exit.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::junit;

/// Expands globs; a plain path that does not exist is reported.
pub(super) fn expand(patterns: &[String]) -> (Vec<PathBuf>, Vec<String>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for p in patterns {
        match glob::glob(p) {
            Ok(paths) => {
                let before = files.len();
                files.extend(paths.filter_map(Result::ok).filter(|p| p.is_file()));
                if files.len() == before {
                    problems.push(format!("no report file matches {p:?}"));
                }
            }
            Err(e) => problems.push(format!("bad glob {p:?}: {e}")),
        }
    }
    files.sort();
    files.dedup();
    (files, problems)
}

/// Parses every file; returns the merged report, or why there is none.
pub(super) fn read_reports(
    files: &[PathBuf],
    mut problems: Vec<String>,
) -> (Result<junit::Report, String>, Vec<String>) {
    let mut reports = Vec::new();
    for f in files {
        match junit::parse_file(f) {
            Ok(r) => reports.push(r),
            Err(e) => problems.push(format!("{}: {e}", f.display())),
        }
    }
    if reports.is_empty() {
        let why = if problems.is_empty() {
            "no JUnit report was found".to_string()
        } else {
            problems.join("; ")
        };
        return (Err(why), problems);
    }
    (Ok(junit::merge(reports)), problems)
}

pub(super) fn modified_since(path: &Path, t: SystemTime) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|m| m + Duration::from_secs(2) >= t)
        .unwrap_or(false)
}
