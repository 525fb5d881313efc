//! Where `get_report` may write files: the operator's `--report-dir`
//! ([`ReportDir`]), and nowhere else.
//!
//! Why this shape: `output_path` comes from whoever speaks MCP to this
//! server (a model following a prompt, or anyone reaching `--http`), so it
//! is a name inside a directory the operator chose, never a path of the
//! caller's choosing. Without `--report-dir` no file is written at all, over
//! stdio and HTTP alike; the report is embedded in the answer instead.
//!
//! Guarantees, checked in this order:
//! - `output_path` is relative, has no `..`, does not start with `~`, holds
//!   no control character and ends in `.html`.
//! - Its directory exists inside the report dir once symbolic links are
//!   resolved (the parent is canonicalized and must lie under the
//!   canonical report dir), so a link to elsewhere is refused.
//! - An existing file is replaced only if it is a regular file (opened with
//!   `O_NOFOLLOW`, so a symbolic link is refused, never followed) whose
//!   start is a report this server rendered ([`crate::report::is_report`]).
//! - The HTML goes to a new temporary file in the same directory (created
//!   with `O_EXCL`, so it cannot be a link planted in advance), then is
//!   renamed onto the name: a reader never sees half a report, and a rename
//!   replaces a directory entry, never writes through a link. A name that
//!   was free when checked is taken without replacing anything that
//!   appeared there meanwhile.
//! - Every error names `output_path`, what was wrong and what to do, and
//!   echoes at most [`crate::args::ECHO_CHARS`] characters of it.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::args::echo;
use crate::report::{MARKER_WITHIN, is_report};

/// The directory `--report-dir` names, created and resolved at start.
#[derive(Debug, Clone)]
pub struct ReportDir {
    /// Canonical (absolute, no symbolic links): the containment check
    /// compares canonical paths.
    root: PathBuf,
}

/// `--report-dir` cannot be created or resolved.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the report directory {path} (--report-dir / PTP_MCP_REPORT_DIR): {source}")]
pub struct ReportDirError {
    /// The configured path.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl ReportDir {
    /// Creates `dir` if missing and resolves it.
    pub fn open(dir: &Path) -> Result<ReportDir, ReportDirError> {
        let fail = |source| ReportDirError {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(fail)?;
        let root = dir.canonicalize().map_err(fail)?;
        if !root.is_dir() {
            return Err(fail(std::io::Error::new(
                ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        Ok(ReportDir { root })
    }

    /// The resolved directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// What every refusal ends with: how to name a file that works.
    fn hint(&self) -> String {
        format!(
            "give a file name such as report.html; it is written under the report dir {} \
             (--report-dir)",
            self.root.display()
        )
    }

    /// The file `output_path` names: the canonical directory inside the
    /// report dir joined with the file name. Nothing is created.
    pub fn resolve(&self, raw: &str) -> Result<PathBuf, String> {
        let refuse = |why: &str| Err(format!("output_path: {why}; {}", self.hint()));
        if raw.chars().any(char::is_control) {
            return refuse("control characters are not allowed");
        }
        if raw.starts_with('~') {
            return refuse("'~' is not expanded (home directories are not allowed)");
        }
        let path = Path::new(raw);
        if path.has_root() {
            return refuse("absolute paths are not allowed");
        }
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return refuse("'..' is not allowed");
        }
        let Some(name) = path.file_name() else {
            return refuse("it names no file");
        };
        if !name.to_string_lossy().ends_with(".html") || name.len() <= ".html".len() {
            return refuse("the file name must end in .html (reports are HTML)");
        }
        let sub = path.parent().unwrap_or(Path::new(""));
        let dir = match self.root.join(sub).canonicalize() {
            Ok(dir) => dir,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(format!(
                    "output_path: the directory {:?} does not exist in the report dir {}; \
                     create it or give a bare file name such as report.html",
                    echo(&sub.to_string_lossy()),
                    self.root.display()
                ));
            }
            Err(e) => return refuse(&format!("its directory cannot be resolved ({e})")),
        };
        if !dir.starts_with(&self.root) {
            return refuse(&format!(
                "{:?} leads outside the report dir (through a symbolic link)",
                echo(raw)
            ));
        }
        if !dir.is_dir() {
            return refuse(&format!(
                "{:?} is not a directory",
                echo(&sub.to_string_lossy())
            ));
        }
        Ok(dir.join(name))
    }

    /// Writes `html` to the file `output_path` names (see the module doc
    /// for the rules) and answers its path.
    pub fn write(&self, raw: &str, html: &str) -> Result<PathBuf, String> {
        let path = self.resolve(raw)?;
        let replaces = self.replaceable(&path)?;
        let dir = path.parent().unwrap_or(&self.root);
        let io_fail = |e: std::io::Error| {
            format!(
                "output_path: cannot write {}: {e}; check that the report dir is writable by \
                 the user running ptp-mcp",
                path.display()
            )
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".ptp-mcp-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(io_fail)?;
        tmp.write_all(html.as_bytes()).map_err(io_fail)?;
        tmp.flush().map_err(io_fail)?;
        let persisted = if replaces {
            tmp.persist(&path)
        } else {
            tmp.persist_noclobber(&path)
        };
        match persisted {
            Ok(_) => Ok(path),
            Err(e) if e.error.kind() == ErrorKind::AlreadyExists => Err(format!(
                "output_path: {} appeared while the report was written; it was not replaced. \
                 Call get_report again or give another file name",
                path.display()
            )),
            Err(e) => Err(io_fail(e.error)),
        }
    }

    /// `false` if nothing is at `path`, `true` if a report this server
    /// wrote is, an error for anything else.
    fn replaceable(&self, path: &Path) -> Result<bool, String> {
        let keep = |why: &str| {
            Err(format!(
                "output_path: {} {why}; it was not replaced. Give another file name (or remove \
                 that file yourself)",
                path.display()
            ))
        };
        // O_NONBLOCK: opening a FIFO planted there must not hang the tool.
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
            .open(path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) if e.raw_os_error() == Some(Errno::ELOOP as i32) => {
                return keep("is a symbolic link");
            }
            Err(e) => return keep(&format!("exists and cannot be read ({e})")),
        };
        let is_file = file.metadata().map(|m| m.is_file()).unwrap_or(false);
        if !is_file {
            return keep("exists and is not a regular file");
        }
        let mut head = Vec::with_capacity(MARKER_WITHIN);
        (&mut file)
            .take(MARKER_WITHIN as u64)
            .read_to_end(&mut head)
            .map_err(|e| format!("output_path: cannot read {}: {e}", path.display()))?;
        if is_report(&head) {
            Ok(true)
        } else {
            keep("exists and is not a report written by ptp-mcp")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, ReportDir) {
        let t = tempfile::tempdir().expect("tempdir");
        let d = ReportDir::open(&t.path().join("reports")).expect("report dir");
        (t, d)
    }

    #[test]
    fn only_html_names_inside_the_dir_resolve() {
        let (_t, d) = dir();
        assert_eq!(
            d.resolve("r.html").expect("bare name"),
            d.path().join("r.html")
        );
        std::fs::create_dir(d.path().join("sub")).expect("mkdir");
        std::fs::write(d.path().join("f.html"), "x").expect("file");
        assert_eq!(
            d.resolve("sub/./r.html").expect("subdir"),
            d.path().join("sub/r.html")
        );
        for (raw, why) in [
            ("/etc/passwd", "absolute paths are not allowed"),
            ("../r.html", "'..' is not allowed"),
            ("sub/../../r.html", "'..' is not allowed"),
            ("~/r.html", "'~' is not expanded"),
            ("r\n.html", "control characters"),
            ("r.txt", "must end in .html"),
            (".html", "must end in .html"),
            ("sub", "must end in .html"),
            ("nope/r.html", "does not exist in the report dir"),
            ("f.html/r.html", "\"f.html\" is not a directory"),
        ] {
            let e = d.resolve(raw).expect_err(raw);
            assert!(
                e.starts_with("output_path: ") && e.contains(why),
                "{raw}: {e}"
            );
        }
        let e = d.resolve("/x.html").expect_err("absolute");
        assert_eq!(
            e,
            format!(
                "output_path: absolute paths are not allowed; give a file name such as \
                 report.html; it is written under the report dir {} (--report-dir)",
                d.path().display()
            )
        );
    }

    #[test]
    fn a_fifo_or_directory_in_the_way_is_refused_without_hanging() {
        let (_t, d) = dir();
        std::fs::create_dir(d.path().join("d.html")).expect("mkdir");
        let e = d.write("d.html", "x").expect_err("directory");
        assert!(e.contains("not a regular file"), "{e}");
        let fifo = d.path().join("f.html");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let e = d.write("f.html", "x").expect_err("fifo");
        assert!(e.contains("not a regular file"), "{e}");
    }
}
