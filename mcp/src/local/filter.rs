//! Checking a user's filter before anything starts, and resolving the
//! configured interpreter. Everything else about runners (detection, how a
//! filter becomes arguments, node ids, listing, exit codes) is the agent's
//! (`ptp-agent`'s runner module); this server only refuses what could be
//! more than a selection.
//!
//! # Filters
//!
//! A filter reaches the agent as one argument of an argv (`--filter F`),
//! never through a shell, and the agent passes it to the runner as one
//! argument too. It is refused when it could be read as something other
//! than a selection: a leading `-` (an option), a leading `@` (pytest ≥ 8.2
//! reads arguments from the named file), `..` (a path out of the project),
//! a leading `/` (an absolute path), control characters, or more than
//! [`MAX_FILTER_CHARS`] characters.

use std::path::{Path, PathBuf};

/// Longest filter accepted, in characters. A node id of a parametrised
/// test in a deep package stays well under it; longer input is not a
/// selection a person typed.
pub const MAX_FILTER_CHARS: usize = 200;

/// The configured interpreter (`--python`): a relative path with a
/// directory is taken from the root, a bare name is looked up on PATH.
/// Without one the agent chooses (the root's `.venv/bin/python`, else
/// `python3`).
pub fn python(root: &Path, configured: &Path) -> PathBuf {
    if configured.components().count() > 1 && configured.is_relative() {
        root.join(configured)
    } else {
        configured.to_path_buf()
    }
}

/// Refuses a filter that could be more than a selection (see the module
/// doc); the error says what is wrong and what is allowed.
pub fn check_filter(filter: &str) -> Result<(), String> {
    let why = if filter.chars().count() > MAX_FILTER_CHARS {
        format!("is longer than {MAX_FILTER_CHARS} characters")
    } else if filter.starts_with('-') {
        "starts with '-' and would be read as an option".to_string()
    } else if filter.starts_with('@') {
        "starts with '@' and pytest would read arguments from that file".to_string()
    } else if filter.starts_with('/') {
        "is an absolute path; give a path relative to the project root".to_string()
    } else if filter.contains("..") {
        "contains '..'; paths must stay inside the project root".to_string()
    } else if filter.chars().any(char::is_control) {
        "contains control characters".to_string()
    } else {
        return Ok(());
    };
    let shown: String = filter
        .chars()
        .take(60)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    Err(format!(
        "filter {shown:?}{} {why}. Give a node id or path (tests/test_cart.py::test_total), \
         or a -k keyword expression (\"cart and not slow\"), at most {MAX_FILTER_CHARS} \
         characters; nothing was run",
        if filter.chars().count() > 60 {
            "…"
        } else {
            ""
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_that_could_be_more_than_a_selection_are_refused() {
        for bad in [
            "-x",
            "--collect-only",
            "-k",
            "@args.txt",
            "@tests/test_a.py",
            "a/../b",
            "..",
            "tests/../../etc",
            "/etc/passwd",
            "a\u{7}",
            "a\nb",
            "test\u{0}",
            "tab\there",
            "\u{85}next-line",
        ] {
            let e = check_filter(bad).expect_err(bad);
            assert!(e.contains("nothing was run"), "{bad:?}: {e}");
        }
        let long = "a".repeat(MAX_FILTER_CHARS + 1);
        assert!(
            check_filter(&long)
                .expect_err("long")
                .contains("longer than 200")
        );
        let e = check_filter("a\u{7}").expect_err("bell");
        assert!(
            e.contains("\"a?\"") && e.contains("control characters"),
            "{e}"
        );
        for good in [
            "cart",
            "cart and not slow",
            "test_total[2]",
            "tests/test_cart.py",
            "tests/test_cart.py::TestCart::test_total[a.b/c]",
            "é-test",
            &"a".repeat(MAX_FILTER_CHARS),
        ] {
            assert_eq!(check_filter(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn a_configured_python_is_resolved_from_the_root() {
        let root = Path::new("/work/shop");
        assert_eq!(
            python(root, Path::new("/usr/bin/python3.12")),
            PathBuf::from("/usr/bin/python3.12")
        );
        assert_eq!(
            python(root, Path::new("python3.12")),
            PathBuf::from("python3.12"),
            "a bare name is looked up on PATH"
        );
        assert_eq!(
            python(root, Path::new("env/bin/python")),
            PathBuf::from("/work/shop/env/bin/python")
        );
    }
}
