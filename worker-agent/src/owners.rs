//! CODEOWNERS: who owns a test's file, sent with each case
//! (`TestCase::owners`).
//!
//! # Where
//!
//! The first of `.github/CODEOWNERS`, `.gitlab/CODEOWNERS`, `CODEOWNERS`,
//! `docs/CODEOWNERS` in the repository's root (GitHub looks in `.github/`,
//! the root and `docs/`; GitLab in the root, `docs/` and `.gitlab/`), or
//! the file named with `--codeowners`.
//!
//! # Rules (GitHub's, with GitLab's sections)
//!
//! - Each line is a pattern followed by owners (`@user`, `@org/team`, an
//!   e-mail). `#` starts a comment (a whole line, or a word starting with
//!   `#` after the pattern); `\#` starts a pattern with `#`. Blank lines are
//!   ignored, and so are lines GitHub refuses: negation (`!`) and character
//!   ranges (`[`).
//! - **The last matching line wins**; a matching line without owners (and
//!   no section default) leaves the file without owners.
//! - Patterns follow gitignore as GitHub documents it: a pattern with a `/`
//!   at its start or in its middle is anchored at the root, one without is
//!   matched at any depth; `*` matches within one path segment (so
//!   `docs/*` owns `docs/a.md` but not `docs/x/b.md`), `?` one character,
//!   `**` any number of segments (`**/logs`, `docs/**`, `a/**/b`); a
//!   trailing `/` matches directories only. A pattern that matches a
//!   directory owns everything under it (`/apps/github`, `apps/`,
//!   `**/logs`, `*asyncio*`), except an anchored one ending in a wildcard:
//!   `docs/*` owns `docs/a.md` only, as GitHub documents.
//! - GitLab sections: `[Section]` or `^[Optional section]` (with an
//!   optional `[N]` approvals count), followed by the section's default
//!   owners, which lines of the section without owners get. Each section
//!   is matched on its own (last match wins within it) and the owners of
//!   every section are combined, as GitLab does; lines before the first
//!   header form a section of their own. Sections with the same name
//!   (case-insensitive) are one.
//!
//! # Guarantees
//!
//! A case gets at most [`MAX_OWNERS`] owners of at most
//! [`MAX_OWNER_BYTES`] bytes each (longer ones are dropped), in the order
//! the file names them, each once: the bounds `TestCase::validate`
//! enforces. A file that cannot be read gives no owners (and a warning),
//! never a failed run.

use std::path::{Path, PathBuf};

use ptp_nats::schema::TestCase;
pub use ptp_nats::schema::{MAX_OWNER_BYTES, MAX_OWNERS};

use crate::runner::{self, Runner};

/// Where the file is looked for, in order.
pub const LOCATIONS: [&str; 4] = [
    ".github/CODEOWNERS",
    ".gitlab/CODEOWNERS",
    "CODEOWNERS",
    "docs/CODEOWNERS",
];

/// The largest file read (GitHub ignores files over 3 MB).
pub const MAX_FILE_BYTES: u64 = 3 * 1024 * 1024;

/// One pattern line.
#[derive(Debug, Clone)]
struct Rule {
    anchored: bool,
    dir_only: bool,
    segs: Vec<String>,
    owners: Vec<String>,
}

/// A section: its rules in file order.
#[derive(Debug, Clone, Default)]
struct Section {
    name: String,
    rules: Vec<Rule>,
}

/// A parsed CODEOWNERS file.
#[derive(Debug, Clone, Default)]
pub struct CodeOwners {
    sections: Vec<Section>,
}

/// Finds the file in `root` (see the module doc).
pub fn find(root: &Path) -> Option<PathBuf> {
    LOCATIONS.iter().map(|l| root.join(l)).find(|p| p.is_file())
}

/// Fills each case's `owners` from the CODEOWNERS file: `named`
/// (`--codeowners`), else the one found in the repository's root (git's
/// top level, else `cwd`). Case files are taken relative to `cwd` (where
/// the runner ran). Returns a warning when a file could not be used.
pub fn fill(
    cases: &mut [TestCase],
    runner: Option<Runner>,
    cwd: &Path,
    named: Option<&Path>,
) -> Option<String> {
    let root = crate::config::git(&["rev-parse", "--show-toplevel"])
        .map(PathBuf::from)
        .unwrap_or_else(|| cwd.to_path_buf());
    let path = match named {
        Some(p) => p.to_path_buf(),
        None => find(&root)?,
    };
    let co = match load(&path) {
        Ok(c) => c,
        Err(e) => return Some(format!("CODEOWNERS not used: {e}")),
    };
    if co.is_empty() {
        return None;
    }
    // cwd inside the repository, as a prefix of the case files.
    let prefix = std::fs::canonicalize(cwd)
        .ok()
        .zip(std::fs::canonicalize(&root).ok())
        .and_then(|(c, r)| c.strip_prefix(&r).ok().map(Path::to_path_buf))
        .unwrap_or_default();
    for c in cases.iter_mut() {
        if let Some(file) = runner::case_file(runner, c, |p| cwd.join(p).is_file()) {
            let in_repo = prefix.join(&file);
            c.owners = co.owners_of(&in_repo.to_string_lossy());
        }
    }
    None
}

/// Reads and parses `path`.
pub fn load(path: &Path) -> Result<CodeOwners, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} is {} bytes, over the {MAX_FILE_BYTES} bytes GitHub reads; not used",
            path.display(),
            meta.len()
        ));
    }
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(CodeOwners::parse(&String::from_utf8_lossy(&text)))
}

/// Splits a line into words; a word starting with `#` ends the line.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                // `\#` and `\ ` keep the character.
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// A GitLab section header: `[Name]`, `^[Name]`, `[Name][2]`, then
/// default owners. Returns the name and the owners.
fn section_header(line: &str) -> Option<(String, Vec<String>)> {
    let rest = line.strip_prefix('^').unwrap_or(line);
    let rest = rest.strip_prefix('[')?;
    let end = rest.find(']')?;
    let name = rest[..end].trim().to_string();
    if name.is_empty() {
        return None;
    }
    let mut after = &rest[end + 1..];
    if let Some(n) = after.strip_prefix('[')
        && let Some(close) = n.find(']')
        && n[..close].chars().all(|c| c.is_ascii_digit())
    {
        after = &n[close + 1..];
    }
    // `[abc].js` is a (refused) pattern, not a header.
    if !after.is_empty() && !after.starts_with(char::is_whitespace) {
        return None;
    }
    Some((name, words(after)))
}

impl CodeOwners {
    /// Parses the file's text (never fails: lines it cannot use are skipped).
    pub fn parse(text: &str) -> CodeOwners {
        let mut sections: Vec<Section> = vec![Section::default()];
        let mut defaults: Vec<String> = Vec::new();
        let mut current = 0;
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((name, owners)) = section_header(line) {
                let key = name.to_lowercase();
                current = match sections.iter().position(|s| s.name == key) {
                    Some(i) => i,
                    None => {
                        sections.push(Section {
                            name: key,
                            rules: Vec::new(),
                        });
                        sections.len() - 1
                    }
                };
                defaults = owners;
                continue;
            }
            let w = words(line);
            let Some((pattern, owners)) = w.split_first() else {
                continue;
            };
            if pattern.starts_with('!') || pattern.contains('[') {
                continue;
            }
            let owners = if owners.is_empty() && current != 0 {
                defaults.clone()
            } else {
                owners.to_vec()
            };
            if let Some(rule) = Rule::new(pattern, owners) {
                sections[current].rules.push(rule);
            }
        }
        CodeOwners { sections }
    }

    /// The owners of `path` (relative to the repository root, `/`
    /// separated), bounded as the module doc says.
    pub fn owners_of(&self, path: &str) -> Vec<String> {
        let path = path.trim_start_matches("./").trim_start_matches('/');
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if segs.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<String> = Vec::new();
        for section in &self.sections {
            let Some(rule) = section.rules.iter().rev().find(|r| r.matches(&segs)) else {
                continue;
            };
            for o in &rule.owners {
                if out.len() >= MAX_OWNERS {
                    return out;
                }
                if o.len() <= MAX_OWNER_BYTES && !out.contains(o) {
                    out.push(o.clone());
                }
            }
        }
        out
    }

    /// Whether the file has any rule.
    pub fn is_empty(&self) -> bool {
        self.sections.iter().all(|s| s.rules.is_empty())
    }
}

impl Rule {
    fn new(pattern: &str, owners: Vec<String>) -> Option<Rule> {
        let dir_only = pattern.ends_with('/');
        let p = pattern.trim_end_matches('/');
        let anchored = p.contains('/');
        let p = p.trim_start_matches('/');
        let mut segs: Vec<String> = p
            .split('/')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if segs.is_empty() {
            // `/` alone: the whole repository.
            segs.push("**".into());
        }
        if !anchored {
            segs.insert(0, "**".into());
        }
        Some(Rule {
            // `**/x` is anchored in form only: it matches at any depth.
            anchored: anchored && segs[0] != "**",
            dir_only,
            segs,
            owners,
        })
    }

    fn matches(&self, path: &[&str]) -> bool {
        let last_plain = self
            .segs
            .last()
            .is_some_and(|s| !s.contains('*') && !s.contains('?'));
        // The path itself (a file), then its directories: always for a
        // plain last segment, a `/` pattern or an unanchored one (gitignore);
        // never for an anchored wildcard (`docs/*` is one level).
        if !self.dir_only && match_segs(&self.segs, path) {
            return true;
        }
        let dirs = if last_plain || self.dir_only || !self.anchored {
            path.len().saturating_sub(1)
        } else {
            0
        };
        (1..=dirs).any(|k| match_segs(&self.segs, &path[..k]))
    }
}

/// Whether pattern segments match path segments (`**` is any number of
/// segments).
fn match_segs(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => (0..=path.len()).any(|i| match_segs(rest, &path[i..])),
        Some((p, rest)) => match path.split_first() {
            Some((s, tail)) => match_one(p.as_bytes(), s.as_bytes()) && match_segs(rest, tail),
            None => false,
        },
    }
}

/// One segment: `*` any run of characters, `?` one, others literally.
fn match_one(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_one(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && match_one(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && match_one(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(file: &str, table: &[(&str, &[&str])]) {
        let co = CodeOwners::parse(file);
        for (path, want) in table {
            assert_eq!(co.owners_of(path), *want, "{path}");
        }
    }

    /// The example file of GitHub's documentation ("About code owners"),
    /// with the paths its comments name.
    #[test]
    fn githubs_documented_example() {
        let file = r#"
# These owners will be the default owners for everything in
# the repo. Unless a later match takes precedence,
# @global-owner1 and @global-owner2 will be requested for
# review when someone opens a pull request.
*       @global-owner1 @global-owner2

# Order is important; the last matching pattern takes the most
# precedence. When someone opens a pull request that only
# modifies JS files, only @js-owner and not the global
# owner(s) will be requested for a review.
*.js    @js-owner #This is an inline comment.

# You can also use email addresses if you prefer. They'll be
# used to look up users just like we do for commit author
# emails.
*.go docs@example.com

# Teams can be specified as code owners as well.
*.txt @octo-org/octocats

# In this example, @doctocat owns any files in the build/logs
# directory at the root of the repository and any of its
# subdirectories.
/build/logs/ @doctocat

# The `docs/*` pattern will match files like
# `docs/getting-started.md` but not further nested files like
# `docs/build-app/troubleshooting.md`.
docs/*  docs@example.com

# In this example, @octocat owns any file in an apps directory
# anywhere in your repository.
apps/ @octocat

# In this example, @doctocat owns any file in the `/docs`
# directory in the root of your repository and any of its
# subdirectories.
/docs/ @doctocat

# In this example, any change inside the `/scripts` directory
# will require approval from @doctocat or @octocat.
/scripts/ @doctocat @octocat

# In this example, @octocat owns any file in a `/logs` directory such as
# `/build/logs`, `/scripts/logs`, and `/deeply/nested/logs`. Any changes
# in a `/logs` directory will require approval from @octocat.
**/logs @octocat

# In this example, @octocat owns any file in the `/apps`
# directory in the root of your repository except for the `/apps/github`
# subdirectory, as this subdirectory has its own owner @doctocat
/apps/ @octocat
/apps/github @doctocat

# In this example, @octocat owns any file in the `/apps`
# directory in the root of your repository except for the `/apps/github`
# subdirectory, as this subdirectory has no owners
/apps/ @octocat
/apps/github
"#;
        let global: &[&str] = &["@global-owner1", "@global-owner2"];
        check(
            file,
            &[
                ("README.md", global),
                ("src/app.js", &["@js-owner"]),
                ("cmd/main.go", &["docs@example.com"]),
                ("notes/todo.txt", &["@octo-org/octocats"]),
                ("build/logs/today.log", &["@octocat"]), // **/logs wins, later
                ("docs/getting-started.md", &["@doctocat"]), // /docs/ is later than docs/*
                ("docs/build-app/troubleshooting.md", &["@doctocat"]),
                ("scripts/deploy.sh", &["@doctocat", "@octocat"]),
                ("scripts/logs/x.txt", &["@octocat"]),
                ("deeply/nested/logs/y", &["@octocat"]),
                ("web/apps/ui.ts", &["@octocat"]),
                ("apps/api/server.py", &["@octocat"]),
                ("apps/github/hooks.js", &[]),
            ],
        );
    }

    /// `docs/*` alone: one level only; `*` and `?` stay in a segment.
    #[test]
    fn a_star_stays_within_its_segment() {
        check(
            "docs/*  @docs\n/src/**/test_*.py @qa\n/lib/?.c @c\n",
            &[
                ("docs/getting-started.md", &["@docs"]),
                ("docs/build-app/troubleshooting.md", &[]),
                ("src/test_a.py", &["@qa"]),
                ("src/deep/er/test_b.py", &["@qa"]),
                ("src/deep/helper.py", &[]),
                ("lib/a.c", &["@c"]),
                ("lib/ab.c", &[]),
            ],
        );
    }

    /// A layout like a large Python project's (CPython's `.github/CODEOWNERS`
    /// style: anchored directories, file globs, per-module experts).
    #[test]
    fn a_python_project_layout() {
        let file = r#"
# Default
*                      @core-devs
# Build system
configure*             @build-team
/Tools/build/          @build-team
# asyncio
**/*asyncio*           @asyncio-experts
/Lib/test/test_asyncio/ @asyncio-experts @loop-owner
# Tests of the import system
/Lib/test/test_import* @import-team
/Lib/importlib/        @import-team
# Documentation has no code owners
/Doc/
"#;
        check(
            file,
            &[
                (
                    "Lib/test/test_asyncio/test_tasks.py",
                    &["@asyncio-experts", "@loop-owner"],
                ),
                ("Lib/asyncio/tasks.py", &["@asyncio-experts"]),
                ("Modules/_asynciomodule.c", &["@asyncio-experts"]),
                // An anchored wildcard matches one level, like `docs/*`.
                ("Lib/test/test_importlib/test_api.py", &["@core-devs"]),
                ("Lib/test/test_import.py", &["@import-team"]),
                ("Lib/importlib/util.py", &["@import-team"]),
                ("configure.ac", &["@build-team"]),
                ("Tools/build/freeze.py", &["@build-team"]),
                ("Doc/library/os.rst", &[]),
                ("Lib/os.py", &["@core-devs"]),
            ],
        );
    }

    /// GitLab sections: defaults after the header, optional sections,
    /// approval counts, and owners of every section combined.
    #[test]
    fn gitlab_sections_combine() {
        let file = r#"
* @everyone

[Backend][2] @backend-leads
/app/
/app/payments/ @payments-team
*.rb

^[Docs] @tech-writers
*.md
/app/README.md @app-writer

[backend]
/app/legacy/ @legacy-team
"#;
        check(
            file,
            &[
                ("app/models/user.rb", &["@everyone", "@backend-leads"]),
                ("app/payments/charge.rb", &["@everyone", "@backend-leads"]),
                ("app/payments/refund.py", &["@everyone", "@payments-team"]),
                (
                    "app/README.md",
                    &["@everyone", "@backend-leads", "@app-writer"],
                ),
                ("docs/setup.md", &["@everyone", "@tech-writers"]),
                ("app/legacy/old.py", &["@everyone", "@legacy-team"]),
                ("lib/tool.py", &["@everyone"]),
            ],
        );
    }

    /// A JavaScript monorepo (packages with their own owners, test files by
    /// suffix anywhere), with escapes and refused lines.
    #[test]
    fn a_monorepo_with_escapes_and_refused_lines() {
        let file = "\
packages/**            @platform
/packages/router/      @router-team
*.test.ts              @qa
!packages/router/x.ts  @nobody
[abc].js               @nobody
\\#notes.md            @hash-owner
/a\\ b/                @spaced
";
        check(
            file,
            &[
                ("packages/core/src/index.ts", &["@platform"]),
                ("packages/router/src/route.ts", &["@router-team"]),
                ("packages/router/src/route.test.ts", &["@qa"]),
                ("packages/router/x.ts", &["@router-team"]),
                ("b.js", &[]),
                ("#notes.md", &["@hash-owner"]),
                ("a b/c.txt", &["@spaced"]),
            ],
        );
    }

    #[test]
    fn owners_are_bounded_and_unique() {
        let many: Vec<String> = (0..40).map(|i| format!("@team-{i}")).collect();
        let long = format!("@{}", "x".repeat(MAX_OWNER_BYTES));
        let file = format!("* @a @a {long} {}\n", many.join(" "));
        let owners = CodeOwners::parse(&file).owners_of("x.py");
        assert_eq!(owners.len(), MAX_OWNERS);
        assert_eq!(owners[0], "@a");
        assert_eq!(
            owners[1], "@team-0",
            "duplicates and over-long owners dropped"
        );
    }

    #[test]
    fn the_file_is_found_where_github_looks() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(find(dir.path()), None);
        std::fs::create_dir(dir.path().join("docs")).expect("docs");
        std::fs::write(dir.path().join("docs/CODEOWNERS"), "* @d\n").expect("w");
        assert_eq!(find(dir.path()), Some(dir.path().join("docs/CODEOWNERS")));
        std::fs::write(dir.path().join("CODEOWNERS"), "* @r\n").expect("w");
        assert_eq!(find(dir.path()), Some(dir.path().join("CODEOWNERS")));
        std::fs::create_dir(dir.path().join(".github")).expect("gh");
        std::fs::write(dir.path().join(".github/CODEOWNERS"), "* @g\n").expect("w");
        let found = find(dir.path()).expect("found");
        assert_eq!(found, dir.path().join(".github/CODEOWNERS"));
        assert_eq!(load(&found).expect("loads").owners_of("a"), ["@g"]);
    }
}
