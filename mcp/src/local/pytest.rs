//! What the local tools know about pytest: recognising a pytest project,
//! choosing its interpreter, checking a user's filter and turning it into
//! arguments, turning a JUnit case back into a node id, and reading the
//! ids `--collect-only -q` prints.
//!
//! Everything here is pure (the file system is reached through a closure
//! where it matters), so it is tested beside the code.
//!
//! # Filters
//!
//! A filter reaches pytest as one argument of an argv, never through a
//! shell. It is refused when it could be read as something other than a
//! selection: a leading `-` (an option), a leading `@` (pytest ≥ 8.2 reads
//! arguments from the named file), `..` (a path out of the project), a
//! leading `/` (an absolute path), control characters, or more than
//! [`MAX_FILTER_CHARS`] characters. A filter with `::` or `/`, or ending in
//! `.py`, is a node id or path and is passed as is; anything else is a
//! keyword expression passed as `-k <filter>`.
//!
//! # Node ids from JUnit cases
//!
//! pytest's JUnit XML names a test by `classname` (the file's path with
//! `/` turned into `.`, then the classes) and `name` (function and
//! parameters): `tests.test_cart.TestCart` + `test_total[2]`. The dots of
//! directories and classes cannot be told apart, so the node id is found by
//! asking which dotted prefix of the classname, as a path ending in `.py`,
//! is a file under the project root (longest first): `tests/test_cart.py::
//! TestCart::test_total[2]`. A case with a `file` attribute (pytest's
//! `junit_family=xunit1`) uses it directly. A case with no classname is a
//! collection error named by its module (`tests.test_broken`) and maps to
//! the file.

use std::path::{Component, Path, PathBuf};

/// Longest filter accepted, in characters. A node id of a parametrised
/// test in a deep package stays well under it; longer input is not a
/// selection a person typed.
pub const MAX_FILTER_CHARS: usize = 200;

/// Files whose presence in the project root says "pytest".
const MARKERS: [&str; 5] = [
    "pyproject.toml",
    "pytest.ini",
    "setup.cfg",
    "tox.ini",
    "conftest.py",
];

/// Directories searched (besides the root) for `test_*.py` / `*_test.py`.
const TEST_DIRS: [&str; 2] = ["tests", "test"];

/// Whether `root` looks like a pytest project: one of the [`MARKERS`], or
/// a `test_*.py` / `*_test.py` file in the root, `tests/` or `test/`.
pub fn detect(root: &Path) -> bool {
    if MARKERS.iter().any(|m| root.join(m).is_file()) {
        return true;
    }
    let is_test_file = |name: &str| {
        name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"))
    };
    std::iter::once(root.to_path_buf())
        .chain(TEST_DIRS.iter().map(|d| root.join(d)))
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(Result::ok)
        .any(|e| is_test_file(&e.file_name().to_string_lossy()))
}

/// What the detection looks for, for an error message.
pub fn markers_text() -> String {
    format!("{} or test_*.py files", MARKERS.join(", "))
}

/// The interpreter: the configured one (relative paths are taken from the
/// root), else the root's `.venv/bin/python`, else `python3` from PATH.
pub fn python(root: &Path, configured: Option<&Path>) -> PathBuf {
    match configured {
        Some(p) if p.components().count() > 1 && p.is_relative() => root.join(p),
        Some(p) => p.to_path_buf(),
        None => {
            let venv = root.join(".venv/bin/python");
            if venv.is_file() {
                venv
            } else {
                PathBuf::from("python3")
            }
        }
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

/// pytest arguments for a checked filter: a node id or path as is,
/// anything else as `-k <filter>`.
pub fn filter_args(filter: &str) -> Vec<String> {
    if filter.contains("::") || filter.contains('/') || filter.ends_with(".py") {
        vec![filter.to_string()]
    } else {
        vec!["-k".to_string(), filter.to_string()]
    }
}

/// A relative path made only of normal components (no `..`, no root, no
/// empty parts) that cannot be read as an option or an argument file, as a
/// string with `/`.
fn safe_relative(path: &str) -> Option<String> {
    let path = path.strip_prefix("./").unwrap_or(path);
    if path.starts_with('-') || path.starts_with('@') {
        return None;
    }
    let p = Path::new(path);
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The node id of a JUnit case, or `None` when no file under the root (as
/// `is_file` sees it) matches. See the module doc for the rules.
pub fn node_id(
    is_file: impl Fn(&str) -> bool,
    file: Option<&str>,
    classname: Option<&str>,
    name: &str,
) -> Option<String> {
    if name.chars().any(char::is_control) {
        return None;
    }
    let classname = classname.map(str::trim).filter(|c| !c.is_empty());
    let join = |path: &str, classes: &[&str]| {
        let mut id = path.to_string();
        for c in classes {
            id.push_str("::");
            id.push_str(c);
        }
        id.push_str("::");
        id.push_str(name);
        id
    };
    // The file attribute, when it agrees with the classname.
    if let Some(path) = file.and_then(safe_relative)
        && path.ends_with(".py")
        && is_file(&path)
    {
        let module = path.trim_end_matches(".py").replace('/', ".");
        match classname {
            None => return Some(join(&path, &[])),
            Some(c) if c == module => return Some(join(&path, &[])),
            Some(c) => {
                if let Some(classes) = c.strip_prefix(&format!("{module}.")) {
                    let classes: Vec<&str> = classes.split('.').collect();
                    if classes.iter().all(|p| !p.is_empty()) {
                        return Some(join(&path, &classes));
                    }
                }
            }
        }
    }
    let dotted = |s: &str| -> Option<Vec<String>> {
        let parts: Vec<String> = s.split('.').map(str::to_string).collect();
        let ok = parts.iter().all(|p| {
            !p.is_empty() && p != ".." && !p.contains('/') && !p.chars().any(char::is_control)
        });
        ok.then_some(parts)
    };
    match classname {
        Some(c) => {
            let parts = dotted(c)?;
            if parts[0].starts_with('-') || parts[0].starts_with('@') {
                return None;
            }
            (1..=parts.len()).rev().find_map(|i| {
                let path = format!("{}.py", parts[..i].join("/"));
                if !is_file(&path) {
                    return None;
                }
                let classes: Vec<&str> = parts[i..].iter().map(String::as_str).collect();
                Some(join(&path, &classes))
            })
        }
        // A collection error: `name` is the module, dotted.
        None => {
            let parts = dotted(name)?;
            let path = format!("{}.py", parts.join("/"));
            let safe = !parts[0].starts_with('-') && !parts[0].starts_with('@');
            (safe && is_file(&path)).then_some(path)
        }
    }
}

/// The node ids `pytest --collect-only -q` printed: the lines before the
/// first blank line that contain `::` and do not start with a space (pytest
/// prints every collected item as its node id, then a blank line and the
/// summary).
pub fn collected_ids(stdout: &str) -> impl Iterator<Item = &str> {
    stdout
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.contains("::") && !l.starts_with(char::is_whitespace))
}

/// The `ERROR <path>` lines of pytest's short summary (collection errors).
pub fn error_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("ERROR "))
        .map(str::to_string)
        .collect()
}

/// A name for pytest's exit code (collection or run).
pub fn exit_status(code: Option<i32>) -> &'static str {
    match code {
        Some(0) => "ok",
        Some(1) => "failed",
        Some(2) => "interrupted",
        Some(3) => "internal_error",
        Some(4) => "usage_error",
        Some(5) => "no_tests",
        _ => "crashed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &'static [&'static str]) -> impl Fn(&str) -> bool {
        move |p| list.contains(&p)
    }

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
    fn node_ids_and_paths_are_positional_the_rest_is_a_keyword() {
        assert_eq!(
            filter_args("tests/test_a.py::test_b"),
            ["tests/test_a.py::test_b"]
        );
        assert_eq!(filter_args("tests/unit"), ["tests/unit"]);
        assert_eq!(filter_args("test_a.py"), ["test_a.py"]);
        assert_eq!(
            filter_args("cart and not slow"),
            ["-k", "cart and not slow"]
        );
        assert_eq!(filter_args("test_total[2]"), ["-k", "test_total[2]"]);
    }

    #[test]
    fn classnames_map_to_the_longest_existing_file() {
        let f = files(&[
            "tests/test_cart.py",
            "tests/sub/test_deep.py",
            "test_top.py",
        ]);
        let id = |c: Option<&str>, n: &str| node_id(&f, None, c, n);
        assert_eq!(
            id(Some("tests.test_cart"), "test_ok").as_deref(),
            Some("tests/test_cart.py::test_ok")
        );
        assert_eq!(
            id(Some("tests.test_cart.TestCheckout"), "test_param[a.b/c]").as_deref(),
            Some("tests/test_cart.py::TestCheckout::test_param[a.b/c]")
        );
        assert_eq!(
            id(Some("tests.test_cart.TestOuter.TestInner"), "test_x").as_deref(),
            Some("tests/test_cart.py::TestOuter::TestInner::test_x")
        );
        assert_eq!(
            id(Some("tests.sub.test_deep"), "test_deep").as_deref(),
            Some("tests/sub/test_deep.py::test_deep")
        );
        assert_eq!(
            id(Some("test_top"), "test_t[1-2]").as_deref(),
            Some("test_top.py::test_t[1-2]")
        );
        // Collection errors are named by their module and rerun as a file.
        assert_eq!(
            id(None, "tests.sub.test_deep").as_deref(),
            Some("tests/sub/test_deep.py")
        );
        // Nothing under the root matches: no guess.
        assert_eq!(id(Some("tests.test_gone"), "test_a"), None);
        assert_eq!(id(Some("other.module.Class"), "test_a"), None);
        assert_eq!(id(Some("tests..test_cart"), "test_a"), None);
        assert_eq!(id(Some("tests.test_cart"), "bad\nname"), None);
    }

    #[test]
    fn a_file_attribute_is_preferred_when_it_agrees() {
        let f = files(&["tests/test_cart.py", "tests/test_cart/TestX.py", "-p/x.py"]);
        assert_eq!(
            node_id(
                &f,
                Some("tests/test_cart.py"),
                Some("tests.test_cart.TestX"),
                "test_y"
            )
            .as_deref(),
            Some("tests/test_cart.py::TestX::test_y"),
            "the file says where the module ends, even when a longer prefix exists"
        );
        assert_eq!(
            node_id(
                &f,
                Some("./tests/test_cart.py"),
                Some("tests.test_cart"),
                "test_y"
            )
            .as_deref(),
            Some("tests/test_cart.py::test_y")
        );
        // An unusable file attribute falls back to the classname.
        for bad in [
            "../tests/test_cart.py",
            "/abs/tests/test_cart.py",
            "tests/x.txt",
            "-p/x.py",
        ] {
            assert_eq!(
                node_id(&f, Some(bad), Some("tests.test_cart"), "test_y").as_deref(),
                Some("tests/test_cart.py::test_y"),
                "{bad}"
            );
        }
    }

    #[test]
    fn collect_only_output_is_read_up_to_the_summary() {
        let out = "tests/test_a.py::test_one\n\
                   tests/test_a.py::TestX::test_two[1]\n\
                   \n\
                   ==================== ERRORS ====================\n\
                   ERROR tests/test_broken.py\n\
                   2 tests collected, 1 error in 0.01s\n";
        assert_eq!(
            collected_ids(out).collect::<Vec<_>>(),
            [
                "tests/test_a.py::test_one",
                "tests/test_a.py::TestX::test_two[1]"
            ]
        );
        assert_eq!(error_lines(out), ["ERROR tests/test_broken.py"]);
        assert_eq!(collected_ids("\nno tests collected in 0.01s\n").count(), 0);
        assert_eq!(exit_status(Some(5)), "no_tests");
        assert_eq!(exit_status(None), "crashed");
    }

    #[test]
    fn python_prefers_the_setting_then_the_venv() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(python(dir.path(), None), PathBuf::from("python3"));
        std::fs::create_dir_all(dir.path().join(".venv/bin")).expect("venv");
        std::fs::write(dir.path().join(".venv/bin/python"), "").expect("python");
        assert_eq!(
            python(dir.path(), None),
            dir.path().join(".venv/bin/python")
        );
        assert_eq!(
            python(dir.path(), Some(Path::new("/usr/bin/python3.12"))),
            PathBuf::from("/usr/bin/python3.12")
        );
        assert_eq!(
            python(dir.path(), Some(Path::new("python3.12"))),
            PathBuf::from("python3.12"),
            "a bare name is looked up on PATH"
        );
        assert_eq!(
            python(dir.path(), Some(Path::new("env/bin/python"))),
            dir.path().join("env/bin/python")
        );
    }

    #[test]
    fn detection_looks_for_markers_and_test_files() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(!detect(dir.path()));
        std::fs::create_dir(dir.path().join("tests")).expect("tests");
        std::fs::write(dir.path().join("tests/helper.py"), "").expect("helper");
        assert!(!detect(dir.path()));
        std::fs::write(dir.path().join("tests/cart_test.py"), "").expect("test");
        assert!(detect(dir.path()));
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("tox.ini"), "").expect("tox");
        assert!(detect(dir.path()));
        assert_eq!(
            markers_text(),
            "pyproject.toml, pytest.ini, setup.cfg, tox.ini, conftest.py or test_*.py files"
        );
    }
}
