//! The registry of running masters and the refusal to share a stream with
//! SQLite: [`lock_db`] (one master per database file on a host, by the
//! kernel) and [`run`] (one master per stream, by the bucket).
//!
//! Shape: [`run`] waits for NATS, lists the live `master.*` entries, and
//! either refuses (cancels the master's shutdown token and returns
//! [`ClusterError::Refused`]) or writes its own entry and admits ingest;
//! then it writes the entry every TTL/3, looking for other masters each
//! time, and deletes it when stopped. Guarantees and limits: see the
//! [parent module](super).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{Admission, BUCKET, ClusterError, Settings, Status, open_bucket};

/// What a master writes under `master.<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// `--master-name` (or the host name).
    pub name: String,
    /// The host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// The store: `sqlite` or `postgres`.
    pub store: String,
    /// The database: the SQLite file's canonical path, or PostgreSQL's
    /// `host:port/database` (no credentials).
    pub db: String,
    /// The address this master's API listens on (PostgreSQL masters: part
    /// of the id, so masters on one host and database are told apart).
    #[serde(default)]
    pub listen: String,
    /// When this master started.
    pub started_at: DateTime<Utc>,
}

impl Registration {
    /// This process on SQLite file `db` (canonical path), named `name`.
    pub fn sqlite(name: String, db: &Path) -> Registration {
        Registration {
            name,
            host: gethostname::gethostname()
                .into_string()
                .unwrap_or_else(|h| h.to_string_lossy().into_owned()),
            pid: std::process::id(),
            store: "sqlite".to_string(),
            db: db.display().to_string(),
            listen: String::new(),
            started_at: Utc::now(),
        }
    }

    /// This process on the PostgreSQL database `identity`
    /// ([`ptp_actors::DbTarget::identity`]), its API on `listen`.
    pub fn postgres(name: String, identity: String, listen: String) -> Registration {
        Registration {
            store: "postgres".to_string(),
            db: identity,
            listen,
            ..Registration::sqlite(name, Path::new(""))
        }
    }

    /// Whether this master may consume the stream beside `other`: only two
    /// masters on one PostgreSQL database share it (each run is then
    /// stored once, in the one database, whichever master took it).
    pub fn may_share_with(&self, other: &Registration) -> bool {
        self.store == "postgres" && other.store == "postgres" && self.db == other.db
    }

    /// The id under which this master registers and holds leases: 32 hex
    /// digits of SHA-256(host, db, listen). A restart on the same host and
    /// file (SQLite) or host, database and address (PostgreSQL: the port is
    /// bound, so no two live masters share it) has the same id (see the
    /// [parent module](super)).
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.host.as_bytes());
        h.update([0]);
        h.update(self.db.as_bytes());
        if !self.listen.is_empty() {
            h.update([0]);
            h.update(self.listen.as_bytes());
        }
        h.finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Its key in the bucket.
    pub fn key(&self) -> String {
        format!("master.{}", self.id())
    }
}

/// The exclusive lock on `<db>.master.lock`, held while the master runs;
/// the kernel releases it when the process ends, however it ends.
#[derive(Debug)]
pub struct DbLock {
    _file: File,
    /// The database's canonical path.
    pub db: PathBuf,
}

/// Takes the lock next to SQLite file `db` (creating its directory), or
/// says which process holds it.
pub fn lock_db(db: &Path) -> Result<DbLock, ClusterError> {
    let db = canonical(db)?;
    let mut path = db.clone().into_os_string();
    path.push(".master.lock");
    let path = PathBuf::from(path);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| ClusterError::LockFile {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(ClusterError::Locked(format!(
                "another master is already using {}: it holds the lock {}{}. Two masters on one \
                 SQLite file would both write it; stop the other master, or give this one its own \
                 --db / PTP_DB (and its own NATS server or account)",
                db.display(),
                path.display(),
                if holder.is_empty() {
                    String::new()
                } else {
                    format!(" ({holder})")
                }
            )));
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(ClusterError::LockFile { path, source });
        }
    }
    // Who holds it, for the next one's message; the lock is what counts.
    let me = format!(
        "pid {} on {}, since {}",
        std::process::id(),
        gethostname::gethostname().to_string_lossy(),
        Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    );
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(me.as_bytes()));
    Ok(DbLock { _file: file, db })
}

/// `db`'s canonical path, its directory created if missing (the file may
/// not exist yet).
fn canonical(db: &Path) -> Result<PathBuf, ClusterError> {
    let lock_err = |source| ClusterError::LockFile {
        path: db.to_path_buf(),
        source,
    };
    let name = db.file_name().ok_or_else(|| {
        lock_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the database path names no file",
        ))
    })?;
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(lock_err)?;
    Ok(std::fs::canonicalize(&dir).map_err(lock_err)?.join(name))
}

/// Another master's entry, as found in the bucket.
#[derive(Debug, Clone)]
pub struct Other {
    /// Its key.
    pub key: String,
    /// Its registration, if the value could be read.
    pub registration: Option<Registration>,
    /// Seconds since its last write (by the NATS server's clock).
    pub secs_since_beat: i64,
}

impl Other {
    /// Whether it shares the stream with `me` by right (one PostgreSQL
    /// database); an unreadable entry does not.
    pub fn shares(&self, me: &Registration) -> bool {
        self.registration
            .as_ref()
            .is_some_and(|r| me.may_share_with(r))
    }
}

impl std::fmt::Display for Other {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.registration {
            Some(r) => write!(
                f,
                "master {:?} on host {} (pid {}, {} database {}), last beat {} s ago",
                r.name, r.host, r.pid, r.store, r.db, self.secs_since_beat
            ),
            None => write!(
                f,
                "a master registered as {} (unreadable entry), last beat {} s ago",
                self.key, self.secs_since_beat
            ),
        }
    }
}

/// The live `master.*` entries other than `me_key`.
pub async fn others(
    store: &jetstream::kv::Store,
    me_key: &str,
) -> Result<Vec<Other>, ClusterError> {
    let kv_err = |e: &dyn std::fmt::Display| ClusterError::Kv(e.to_string());
    let keys: Vec<String> = store
        .keys()
        .await
        .map_err(|e| kv_err(&e))?
        .try_collect()
        .await
        .map_err(|e| kv_err(&e))?;
    let mut found = Vec::new();
    for key in keys {
        if !key.starts_with("master.") || key == me_key {
            continue;
        }
        let Some(entry) = store.entry(key.clone()).await.map_err(|e| kv_err(&e))? else {
            continue;
        };
        if entry.operation != jetstream::kv::Operation::Put {
            continue;
        }
        found.push(Other {
            key,
            registration: serde_json::from_slice(&entry.value).ok(),
            secs_since_beat: (Utc::now().timestamp() - entry.created.unix_timestamp()).max(0),
        });
    }
    Ok(found)
}

/// The refusal's message: who the other master is, and what to do.
pub fn refusal(me: &Registration, other: &Other, settings: Settings) -> String {
    format!(
        "another master consumes this NATS account's results stream: {other}. This master stores \
         in {} ({}), and masters sharing a stream must share one PostgreSQL database, or each \
         would store part of the runs in its own. Stop the other master, give each master its \
         own NATS server or account, or point every master at the same --db \
         postgres://USER@HOST/DB. A master that was killed leaves its entry in the {BUCKET} \
         bucket for {} s after its last beat",
        me.store,
        me.db,
        settings.ttl.as_secs(),
    )
}

/// The registry's task; see the module docs. Returns `Refused` after
/// cancelling `shutdown` when another master consumes the stream; ends
/// (deleting this master's entry) when `stop` is cancelled.
pub async fn run(
    js: jetstream::Context,
    settings: Settings,
    me: Registration,
    status: Arc<Status>,
    shutdown: CancellationToken,
    stop: CancellationToken,
) -> Result<(), ClusterError> {
    let key = me.key();
    let value: bytes::Bytes = match serde_json::to_vec(&me) {
        Ok(v) => v.into(),
        Err(e) => return Err(ClusterError::Kv(e.to_string())),
    };
    let mut store: Option<jetstream::kv::Store> = None;
    let mut admitted = false;
    loop {
        let step = async {
            let s = match &store {
                Some(s) => s.clone(),
                None => {
                    let s = open_bucket(&js, settings).await?;
                    store = Some(s.clone());
                    s
                }
            };
            // Peers share this master's database; any other master is foreign.
            let (peers, foreign): (Vec<Other>, Vec<Other>) = others(&s, &key)
                .await?
                .into_iter()
                .partition(|o| o.shares(&me));
            if !admitted && let Some(other) = foreign.first() {
                return Err(ClusterError::Refused(refusal(&me, other, settings)));
            }
            s.put(&key, value.clone())
                .await
                .map_err(|e| ClusterError::Kv(e.to_string()))?;
            Ok((peers, foreign))
        };
        let result = tokio::select! {
            _ = stop.cancelled() => break,
            r = step => r,
        };
        match result {
            Ok((peers, foreign)) => {
                status.set_error(None);
                if !admitted {
                    admitted = true;
                    tracing::info!(key = %key, "registered in {BUCKET}: no other master on this stream");
                    status.set_admission(Admission::Admitted);
                }
                for other in &foreign {
                    tracing::error!(
                        "another master consumes the same results stream: {other}; runs are being \
                         split between two databases: stop one of them"
                    );
                }
                status.set_others(foreign.iter().map(ToString::to_string).collect());
                status.set_peers(peers.iter().map(ToString::to_string).collect());
            }
            Err(ClusterError::Refused(why)) => {
                status.set_admission(Admission::Refused(why.clone()));
                shutdown.cancel();
                return Err(ClusterError::Refused(why));
            }
            Err(e) => {
                tracing::warn!("masters' registry: {e}; retrying");
                status.set_error(Some(e.to_string()));
                // Opened again next time, in case the bucket was removed.
                store = None;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(settings.beat()) => {}
        }
    }
    if admitted {
        let deleted = tokio::time::timeout(settings.beat(), async {
            let s = match store {
                Some(s) => s,
                None => open_bucket(&js, settings).await?,
            };
            s.delete(&key)
                .await
                .map_err(|e| ClusterError::Kv(e.to_string()))
        })
        .await;
        if !matches!(deleted, Ok(Ok(()))) {
            tracing::warn!(
                "could not delete this master's registry entry; it vanishes after {:?}",
                settings.ttl
            );
        }
    }
    Ok(())
}
