//! The spool: runs that could not be published wait here as files until the
//! next `ptp-agent run` or `ptp-agent flush` sends them.
//!
//! Each run is one JSON file `<run_id>.json` holding `{"run": ..., "cases":
//! [...]}` (the same shape `POST /results` accepts). Files are written to a
//! temporary name, synced, then renamed, so a killed agent never leaves a
//! half-written file under a name that flush would send. A file that cannot
//! be read back is renamed `*.bad` and reported, never sent nor deleted.

use std::io::Write;
use std::path::{Path, PathBuf};

use ptp_nats::schema::{RunInfo, TestCase};
use serde::{Deserialize, Serialize};

/// A spooled run.
#[derive(Debug, Serialize, Deserialize)]
pub struct SpooledRun {
    /// The run.
    pub run: RunInfo,
    /// Its cases.
    pub cases: Vec<TestCase>,
}

/// Spool errors, each naming the path involved.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Filesystem trouble.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A spooled file is not a run.
    #[error("spool file {path} is unreadable ({reason}); moved aside to {bad}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
        /// Where it was moved.
        bad: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a run to `dir` atomically and returns the file's path.
pub fn write(dir: &Path, run: &RunInfo, cases: &[TestCase]) -> Result<PathBuf, SpoolError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(format!("{}.json", run.run_id));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    #[derive(Serialize)]
    struct Borrowed<'a> {
        run: &'a RunInfo,
        cases: &'a [TestCase],
    }
    serde_json::to_writer(
        std::io::BufWriter::new(tmp.as_file_mut()),
        &Borrowed { run, cases },
    )
    .map_err(|e| SpoolError::Io {
        path: path.clone(),
        source: e.into(),
    })?;
    tmp.as_file_mut().flush().map_err(io(&path))?;
    tmp.as_file().sync_all().map_err(io(&path))?;
    tmp.persist(&path).map_err(|e| SpoolError::Io {
        path: path.clone(),
        source: e.error,
    })?;
    Ok(path)
}

/// The spooled run files in `dir`, oldest first. A missing dir is empty.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, SpoolError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .map(|p| {
            let t = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, p)
        })
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// Reads a spooled run; a corrupt file is moved aside to `*.bad`.
pub fn read(path: &Path) -> Result<SpooledRun, SpoolError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let bad = path.with_extension("json.bad");
        let _ = std::fs::rename(path, &bad);
        SpoolError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
            bad,
        }
    })
}

/// Removes a sent run (already gone is fine: another flush sent it).
pub fn remove(path: &Path) -> Result<(), SpoolError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use ptp_nats::schema::{Counts, RunStatus};

    fn run(id: &str) -> RunInfo {
        RunInfo {
            run_id: id.into(),
            project: "p".into(),
            branch: None,
            commit: None,
            worker_id: "w".into(),
            host: None,
            runner: None,
            command: None,
            started_at: Utc::now(),
            finished_at: Utc::now(),
            duration_secs: 0.0,
            exit_code: Some(0),
            status: RunStatus::NoTests,
            counts: Counts::default(),
            cases_complete: true,
            note: None,
        }
    }

    #[test]
    fn write_list_read_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = dir.path().join("spool");
        assert!(list(&spool).expect("missing dir is empty").is_empty());
        let p = write(&spool, &run("r1"), &[]).expect("written");
        std::fs::write(spool.join(".tmp-half"), b"{\"run\":").expect("half file");
        let files = list(&spool).expect("listed");
        assert_eq!(files, vec![p.clone()], "temp files are never listed");
        assert_eq!(read(&p).expect("reads back").run.run_id, "r1");
        remove(&p).expect("removed");
        remove(&p).expect("removing twice is fine");
    }

    #[test]
    fn corrupt_files_are_moved_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.json");
        std::fs::write(&p, b"{truncated").expect("write");
        let err = read(&p).expect_err("corrupt");
        assert!(err.to_string().contains("moved aside"), "{err}");
        assert!(dir.path().join("x.json.bad").exists());
        assert!(list(dir.path()).expect("list").is_empty());
    }
}
