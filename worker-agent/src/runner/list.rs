//! Listing tests without running them: the runner's listing command and
//! the parsing of its output into ids shaped like the reports' `test_id`s.
//!
//! Separate from running because listing is its own command per runner
//! (node cannot list at all, and says so); parsing never fails: output it
//! does not understand gives no ids.

use std::path::Path;

use super::Runner;
use super::args::{drop_option, is_gotestsum};

impl Runner {
    /// The command that lists the tests `argv` would run (this runner's
    /// command), or why this runner cannot list them.
    pub fn list_command(self, argv: &[String]) -> Result<Vec<String>, String> {
        let start = Runner::of_command(argv)
            .filter(|(r, _)| *r == self)
            .map_or(1.min(argv.len()), |(_, i)| i);
        let mut out = argv[..start].to_vec();
        let args = &argv[start..];
        match self {
            Runner::Pytest => {
                out.extend(args.iter().cloned());
                out.extend(["--collect-only".into(), "-q".into()]);
            }
            Runner::Vitest => {
                out.push("list".into());
                out.extend(
                    args.iter()
                        .skip_while(|a| matches!(a.as_str(), "run" | "watch" | "dev"))
                        .cloned(),
                );
                out.push("--json".into());
            }
            Runner::Jest => {
                out.extend(args.iter().cloned());
                out.push("--listTests".into());
            }
            Runner::Node => {
                return Err(
                    "node's test runner cannot list tests without running them; run them instead"
                        .into(),
                );
            }
            Runner::Go => {
                let go_args: Vec<String> = if is_gotestsum(argv) {
                    match argv.iter().position(|a| a == "--") {
                        Some(i) => argv[i + 1..].to_vec(),
                        None => Vec::new(),
                    }
                } else {
                    args.to_vec()
                };
                let go_args = drop_option(&go_args, &["-run", "--run"]);
                out = vec!["go".into(), "test".into(), "-list".into(), ".".into()];
                let has_packages = go_args.iter().any(|a| !a.starts_with('-'));
                out.extend(go_args);
                if !has_packages {
                    out.push("./...".into());
                }
            }
            Runner::Nextest => {
                out.truncate(start - 1); // `cargo nextest`
                out.push("list".into());
                out.extend(args.iter().cloned());
                out.extend(["--message-format".into(), "oneline".into()]);
            }
        }
        Ok(out)
    }

    /// The test ids in the output of [`Runner::list_command`], shaped like
    /// the `test_id`s of this runner's reports where the runner says
    /// enough; paths are made relative to `root`.
    pub fn parse_list(self, stdout: &str, root: &Path) -> Vec<String> {
        let rel = |p: &str| {
            Path::new(p)
                .strip_prefix(root)
                .map(|r| r.display().to_string())
                .unwrap_or_else(|_| p.to_string())
        };
        match self {
            Runner::Pytest => stdout
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .filter(|l| l.contains("::") && !l.starts_with(char::is_whitespace))
                .map(str::to_string)
                .collect(),
            Runner::Vitest => {
                #[derive(serde::Deserialize)]
                struct Item {
                    name: String,
                    #[serde(default)]
                    file: Option<String>,
                }
                // Anything printed before the JSON array is not ours.
                let json = stdout.find('[').map_or("", |i| &stdout[i..]);
                serde_json::from_str::<Vec<Item>>(json.trim())
                    .map(|items| {
                        items
                            .into_iter()
                            .map(|i| match i.file {
                                Some(f) => format!("{}::{}", rel(&f), i.name),
                                None => i.name,
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            }
            Runner::Jest => stdout
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && l.starts_with('/'))
                .map(rel)
                .collect(),
            Runner::Node => Vec::new(),
            Runner::Go => {
                // Names, then `ok  <package>  <time>` for each package.
                let mut ids = Vec::new();
                let mut pending = Vec::new();
                for l in stdout.lines() {
                    if let Some(rest) = l.strip_prefix("ok") {
                        let pkg = rest.split_whitespace().next().unwrap_or("");
                        ids.extend(pending.drain(..).map(|n: &str| format!("{pkg}::{n}")));
                    } else if l.starts_with(|c: char| c.is_ascii_uppercase())
                        && !l.contains(char::is_whitespace)
                    {
                        pending.push(l);
                    }
                }
                ids
            }
            Runner::Nextest => stdout
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(bin, test)| format!("{bin}::{}", test.trim()))
                .collect(),
        }
    }
}
