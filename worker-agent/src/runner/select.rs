//! Selecting exact tests by their cases (for `--retries` and
//! `--failed-from`): a selector per case, then the command that runs only
//! them, with the command's own options kept and its selecting parts
//! replaced.
//!
//! Names that go into a regular expression are escaped here (one escape for
//! every runner), so a selection never matches more tests than it came
//! from; a case that cannot be selected is returned as unmapped.

use std::path::Path;

use ptp_nats::schema::TestCase;

use super::args::{drop_option, is_gotestsum};
use super::ids::node_id;
use super::{Runner, Selection};

impl Runner {
    /// The command that runs exactly the tests of `cases` (found in `root`
    /// for pytest's node ids), based on `argv`, this runner's command:
    /// its selecting arguments are replaced, its options kept.
    pub fn select(self, argv: &[String], cases: &[&TestCase], root: &Path) -> Selection {
        let start = Runner::of_command(argv)
            .filter(|(r, _)| *r == self)
            .map_or(1.min(argv.len()), |(_, i)| i);
        let mut sel = Selection::default();
        let add = |sel: &mut Selection, c: &TestCase, selector: Option<String>| match selector {
            Some(s) => {
                if !sel.selected.contains(&c.test_id) {
                    sel.selected.push(c.test_id.clone());
                }
                if !sel.selectors.contains(&s) {
                    sel.selectors.push(s);
                }
            }
            None => {
                if !sel.unmapped.contains(&c.test_id) {
                    sel.unmapped.push(c.test_id.clone())
                }
            }
        };
        for c in cases {
            let selector = match self {
                Runner::Pytest => node_id(
                    |rel| root.join(rel).is_file(),
                    c.file.as_deref(),
                    c.classname.as_deref(),
                    &c.name,
                ),
                Runner::Vitest | Runner::Jest | Runner::Node => {
                    (!c.name.is_empty()).then(|| c.name.clone())
                }
                // Subtests rerun with their parent.
                Runner::Go => {
                    let top = c.name.split('/').next().unwrap_or("");
                    (!top.is_empty() && c.classname.is_some()).then(|| top.to_string())
                }
                Runner::Nextest => {
                    let plain = |s: &str| {
                        !s.is_empty()
                            && !s
                                .chars()
                                .any(|ch| matches!(ch, '(' | ')' | ',' | '\\') || ch.is_control())
                    };
                    match c.classname.as_deref() {
                        Some(b) if plain(b) && plain(&c.name) => {
                            Some(format!("binary_id(={b}) & test(={})", c.name))
                        }
                        _ => None,
                    }
                }
            };
            add(&mut sel, c, selector);
        }
        if sel.selectors.is_empty() || argv.is_empty() {
            return sel;
        }
        let args = &argv[start..];
        sel.argv = match self {
            Runner::Pytest => {
                let mut out = argv[..start].to_vec();
                out.extend(pytest_options(args, root));
                out.extend(sel.selectors.iter().cloned());
                out
            }
            Runner::Vitest => {
                let pattern = regex_alternation(&sel.selectors, Some(" > "));
                let kept = drop_option(argv, &["-t", "--testNamePattern"]);
                self.with_args(&kept, vec!["-t".into(), pattern])
            }
            Runner::Jest => {
                let pattern = regex_alternation(&sel.selectors, None);
                let kept = drop_option(argv, &["-t", "--testNamePattern"]);
                self.with_args(&kept, vec!["-t".into(), pattern])
            }
            Runner::Node => {
                let pattern = regex_alternation(&sel.selectors, None);
                let mut out = drop_option(argv, &["--test-name-pattern"]);
                out.insert(1, format!("--test-name-pattern={pattern}"));
                out
            }
            Runner::Go => {
                let pattern = regex_alternation(&sel.selectors, None);
                let kept = drop_option(argv, &["-run", "--run"]);
                let mut extra = vec!["-run".to_string(), pattern];
                // gotestsum without `--` tests ./...; with a `--` and no
                // package it would test only the current directory.
                let has_packages = match kept.iter().position(|a| a == "--") {
                    Some(i) => kept[i + 1..].iter().any(|a| !a.starts_with('-')),
                    None => {
                        !is_gotestsum(&kept) && kept[start..].iter().any(|a| !a.starts_with('-'))
                    }
                };
                if !has_packages {
                    let mut pkgs: Vec<String> = Vec::new();
                    for c in cases {
                        if let Some(p) = &c.classname
                            && !pkgs.contains(p)
                        {
                            pkgs.push(p.clone());
                        }
                    }
                    extra.extend(pkgs);
                }
                self.with_args(&kept, extra)
            }
            Runner::Nextest => {
                let expr = sel
                    .selectors
                    .iter()
                    .map(|s| format!("({s})"))
                    .collect::<Vec<_>>()
                    .join(" | ");
                let kept = drop_option(argv, &["-E", "--filterset", "--filter-expr"]);
                self.with_args(&kept, vec!["-E".into(), expr])
            }
        };
        sel
    }

    /// How this runner selects the test of `c` alone (a pytest node id, a
    /// test name, a nextest filter), when it can.
    pub fn selector(self, c: &TestCase, root: &Path) -> Option<String> {
        self.select(&[], &[c], root).selectors.into_iter().next()
    }
}

/// pytest options that take their value as the next argument: a value
/// that names an existing path must not be taken for a selection.
const PYTEST_VALUE_OPTIONS: [&str; 26] = [
    "-k",
    "-m",
    "-p",
    "-c",
    "-o",
    "-W",
    "-r",
    "-n",
    "--rootdir",
    "--basetemp",
    "--confcutdir",
    "--override-ini",
    "--junitxml",
    "--junit-xml",
    "--ignore",
    "--ignore-glob",
    "--deselect",
    "--tb",
    "--maxfail",
    "--durations",
    "--log-file",
    "--log-level",
    "--cov",
    "--cov-report",
    "--cov-config",
    "--import-mode",
];

/// pytest's arguments without the ones that select tests by path or node
/// id (an argument that is no option and names a path under `root`), so a
/// rerun selects only the node ids it adds.
fn pytest_options(args: &[String], root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut value_next = false;
    for a in args {
        if value_next {
            value_next = false;
            out.push(a.clone());
            continue;
        }
        if a.starts_with('-') {
            value_next = PYTEST_VALUE_OPTIONS.contains(&a.as_str());
            out.push(a.clone());
            continue;
        }
        let path = a.split("::").next().unwrap_or(a);
        if !path.is_empty() && root.join(path).exists() {
            continue;
        }
        out.push(a.clone());
    }
    out
}

/// `^(?:a|b)$` with every name's metacharacters escaped (for `-t`, `-run`,
/// `--test-name-pattern`: JavaScript and RE2 syntax). With `sep`, each
/// occurrence of it in a name matches either itself or one space (vitest
/// reports `describe > test` and matches `-t` against `describe test`).
pub fn regex_alternation(names: &[String], sep: Option<&str>) -> String {
    let alts: Vec<String> = names
        .iter()
        .map(|n| match sep {
            Some(sep) => n
                .split(sep)
                .map(regex_escape)
                .collect::<Vec<_>>()
                .join(&format!("(?: |{})", regex_escape(sep))),
            None => regex_escape(n),
        })
        .collect();
    format!("^(?:{})$", alts.join("|"))
}

/// `s` with the regular-expression metacharacters escaped.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
