//! From a JUnit case back to the project's files: pytest node ids found
//! by asking which dotted prefix of the classname is a file, and the file a
//! case's test lives in (for owners).
//!
//! Paths are only ever relative and made of normal components
//! (`safe_relative`), so nothing taken from a report can point outside the
//! project or be read as an option or an argument file.

use std::path::{Component, Path};

use ptp_nats::schema::TestCase;

use super::Runner;

/// A relative path made only of normal components (no `..`, no root, no
/// empty parts) that cannot be read as an option or an argument file, as a
/// string with `/`.
fn safe_relative(path: &str) -> Option<String> {
    let path = path.strip_prefix("./").unwrap_or(path);
    if path.starts_with('-') || path.starts_with('@') {
        return None;
    }
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The pytest node id of a JUnit case, or `None` when no file under the
/// root (as `is_file` sees it) matches.
///
/// pytest's JUnit XML names a test by `classname` (the file's path with
/// `/` turned into `.`, then the classes) and `name` (function and
/// parameters): `tests.test_cart.TestCart` + `test_total[2]`. The dots of
/// directories and classes cannot be told apart, so the node id is found by
/// asking which dotted prefix of the classname, as a path ending in `.py`,
/// is a file (longest first): `tests/test_cart.py::TestCart::test_total[2]`.
/// A `file` attribute (`junit_family=xunit1`) that agrees with the
/// classname is used directly. A case with no classname is a collection
/// error named by its module and maps to the file.
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
        None => {
            let parts = dotted(name)?;
            let path = format!("{}.py", parts.join("/"));
            let safe = !parts[0].starts_with('-') && !parts[0].starts_with('@');
            (safe && is_file(&path)).then_some(path)
        }
    }
}

/// The file under the project root a case's test lives in, for owners:
/// the JUnit `file` attribute, else (pytest) the module path found from
/// the classname, else (vitest) the classname when it is a path.
pub fn case_file(
    runner: Option<Runner>,
    c: &TestCase,
    is_file: impl Fn(&str) -> bool,
) -> Option<String> {
    if let Some(f) = c.file.as_deref().and_then(safe_relative) {
        return Some(f);
    }
    match runner {
        Some(Runner::Pytest) => node_id(&is_file, None, c.classname.as_deref(), &c.name)
            .map(|id| id.split("::").next().unwrap_or("").to_string())
            .filter(|p| !p.is_empty()),
        Some(Runner::Vitest) => c
            .classname
            .as_deref()
            .and_then(safe_relative)
            .filter(|p| is_file(p)),
        _ => None,
    }
}
