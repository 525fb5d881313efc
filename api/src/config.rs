//! The master's settings: one clap struct, every option also an environment
//! variable, every default usable on a developer's machine.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};
use ptp_actors::DbTarget;

/// pytest-platform master: consumes test results from NATS JetStream, stores
/// them in SQLite or PostgreSQL and serves the JSON API (docs at /docs).
#[derive(Debug, Clone, Parser)]
#[command(name = "ptp-master", version, about, long_about = None)]
pub struct Config {
    /// NATS server to consume results from; for a cluster, every node,
    /// separated by commas (nats://a:4222,nats://b:4222), and the master
    /// fails over among them. The master starts even when NATS is
    /// unreachable and connects as soon as it can (see GET /health).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// NATS credentials and TLS.
    #[command(flatten)]
    pub nats_auth: ptp_nats::NatsAuth,

    /// This master's name in `/metrics` (`ptp_master_info`) and in the
    /// `X-Ptp-Master` header of every answer, to tell masters apart behind
    /// a load balancer [default: the host name].
    #[arg(long, env = "PTP_MASTER_NAME")]
    pub master_name: Option<String>,

    /// Seconds an entry of this master in the masters' bucket (`ptp_masters`:
    /// its registration, its leases on maintenance and webhook delivery)
    /// lives after its last write; written every third of it. A killed
    /// master's leases pass to another after this long. Masters on one NATS
    /// account must use the same value.
    #[arg(long, env = "PTP_MASTER_TTL_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub master_ttl_secs: u64,

    /// Address the HTTP API listens on.
    #[arg(long, env = "PTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,

    /// The store: a SQLite file path (created with its directory if
    /// missing; the embedded default, one master), or a PostgreSQL URL
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` (several masters may
    /// share it). When neither --db nor PTP_DB is given, DATABASE_URL is used
    /// if set.
    #[arg(long, env = "PTP_DB", default_value = "./data/ptp.sqlite", value_parser = clap::value_parser!(DbTarget))]
    pub db: DbTarget,

    /// Use SQLite synchronous=FULL instead of NORMAL: survives power loss
    /// without losing acked results, at a cost on every commit.
    #[arg(long, env = "PTP_SQLITE_SYNC_FULL")]
    pub sqlite_sync_full: bool,

    /// How long the stream keeps results the master has not consumed yet, in
    /// hours (the longest master outage that loses nothing).
    #[arg(long, env = "PTP_STREAM_MAX_AGE_HOURS", default_value_t = 168)]
    pub stream_max_age_hours: u64,

    /// Replicas of the results stream: 1 on a single nats-server, 3 on a
    /// 3-node cluster (a node may then die without losing acked results).
    /// A stream that exists with another value is changed when the server
    /// allows it; otherwise the master says which setting differs and stops.
    #[arg(long, env = "PTP_STREAM_REPLICAS", default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=5))]
    pub stream_replicas: usize,

    /// Most messages pulled and stored in one SQLite transaction. Messages
    /// are at most NATS's max_payload (1 MiB by default), so 32 keeps a
    /// pull well under the client's 64 MiB pending limit.
    #[arg(long, env = "PTP_INGEST_BATCH", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub ingest_batch: u64,

    /// Seconds JetStream waits for the master's ack before redelivering a
    /// message (after a crash, results reappear this much later).
    #[arg(long, env = "PTP_ACK_WAIT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ack_wait_secs: u64,

    /// Deliveries after which a message SQLite keeps refusing (while it
    /// accepts others) is kept as a dead letter in GET /rejected and acked,
    /// so it cannot block the stream.
    #[arg(long, env = "PTP_MAX_DELIVERIES", default_value_t = 5, value_parser = clap::value_parser!(u64).range(2..=1000))]
    pub max_deliveries: u64,

    /// Keep runs for this many days (by start time), then delete them with
    /// their cases and give the space back; checked at start and hourly.
    /// 0 keeps everything.
    #[arg(long, env = "PTP_RETENTION_DAYS", default_value_t = 0)]
    pub retention_days: u32,

    /// Keep only the newest this many runs of each project (with their
    /// cases), deleting older ones and giving the space back; checked at
    /// start and hourly, together with --retention-days. 0 keeps every run.
    #[arg(long, env = "PTP_RETENTION_RUNS", default_value_t = 0)]
    pub retention_runs: u32,

    /// A run still missing pieces this many minutes after its last piece
    /// arrived (an agent killed while publishing) is dropped and recorded
    /// in GET /rejected; checked at start and hourly.
    #[arg(long, env = "PTP_INCOMPLETE_AFTER_MINUTES", default_value_t = 1440)]
    pub incomplete_after_minutes: u64,

    /// Quarantine a test by itself for this many days when the flaky
    /// detector names it after a run (its newest 50 runs, as GET /flaky);
    /// the agents learn it from the quarantine bucket. 0 turns automatic
    /// quarantine off. A person's quarantine is never replaced nor released.
    #[arg(long, env = "PTP_AUTO_QUARANTINE_DAYS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=366))]
    pub auto_quarantine_days: u32,

    /// Release an automatic quarantine after this many consecutive runs in
    /// which the test passed without retries (a failure or a retry starts
    /// the count over). Clearing the test's flaky verdict (POST
    /// /flaky/clear) or the expiry releases it too.
    #[arg(long, env = "PTP_RELEASE_AFTER_CLEAN_RUNS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub release_after_clean_runs: u32,

    /// A worker not heard from for this many minutes is shown as offline.
    #[arg(long, env = "PTP_OFFLINE_AFTER_MINUTES", default_value_t = 1440)]
    pub offline_after_minutes: u64,

    /// Most CI workers tracked for GET /workers; when a new worker arrives
    /// beyond it, the one seen longest ago is forgotten (it comes back with
    /// its next heartbeat or run).
    #[arg(long, env = "PTP_MAX_WORKERS", default_value_t = ptp_actors::aggregates::DEFAULT_MAX_WORKERS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_workers: usize,

    /// Bearer tokens that may write (POST /results), comma-separated; several
    /// at once for rotation. Unset: anyone who reaches the master can write.
    #[arg(
        long,
        env = "PTP_WRITE_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub write_tokens: Vec<String>,

    /// Bearer tokens that may read the API (write tokens may too),
    /// comma-separated. Unset: reads are open. /health and /docs stay open.
    #[arg(
        long,
        env = "PTP_READ_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub read_tokens: Vec<String>,

    /// Largest accepted request body in MiB (POST /results).
    #[arg(long, env = "PTP_MAX_BODY_MB", default_value_t = 64)]
    pub max_body_mb: usize,

    /// MiB of memory for answers read from SQLite (runs, a run's cases,
    /// compare, flaky tests, clusters, slow tests, history), kept until the
    /// next write; repeated reads are then answered from memory. 0 turns
    /// the cache off.
    #[arg(long, env = "PTP_READ_CACHE_MIB", default_value_t = 32)]
    pub read_cache_mib: usize,

    /// Seconds an HTTP request may take before it is answered 408.
    #[arg(long, env = "PTP_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// MiB of memory the request bodies being read and parsed may hold at
    /// once. Each body is charged 10 times its size (the bytes plus their
    /// parsed form, see README "Security"); one that does not fit is answered
    /// 503 with Retry-After before it is read. At least 10 × --max-body-mb,
    /// so a body of the largest size can always get in on its own.
    #[arg(long, env = "PTP_MAX_INFLIGHT_BODY_MB", default_value_t = 640)]
    pub max_inflight_body_mb: usize,

    /// Most `GET /results/{id}` answers with `cases_limit` above 1000 built
    /// and sent at once; another waits up to 2 seconds for its turn, then is
    /// answered 503 with Retry-After. Smaller pages and `/health` never wait.
    #[arg(long, env = "PTP_MAX_LARGE_READS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_large_reads: u32,

    /// Seconds a client has to send a request's headers, counted from its
    /// first byte (or from the connection's opening, for the first request);
    /// slower connections are closed without an answer.
    #[arg(long, env = "PTP_HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout_secs: u64,

    /// Seconds a keep-alive connection may sit between requests (or a
    /// response sit unread by its client) before the master closes it.
    #[arg(long, env = "PTP_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub idle_timeout_secs: u64,

    /// Webhook targets and delivery (see README "Webhooks").
    #[command(flatten)]
    pub webhooks: crate::webhooks::WebhookArgs,
}

/// The database of [`Config::for_test`]: a SQLite path or a [`DbTarget`].
pub struct TestDb(DbTarget);

impl From<PathBuf> for TestDb {
    fn from(p: PathBuf) -> TestDb {
        TestDb(DbTarget::Sqlite(p))
    }
}

impl From<DbTarget> for TestDb {
    fn from(t: DbTarget) -> TestDb {
        TestDb(t)
    }
}

impl Config {
    /// The settings from the command line and the environment; exits with
    /// clap's message on a bad value. `DATABASE_URL` is the database when
    /// neither `--db` nor `PTP_DB` names one.
    pub fn from_args() -> Config {
        let matches = Config::command().get_matches();
        let mut config = Config::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if matches.value_source("db") == Some(clap::parser::ValueSource::DefaultValue)
            && let Some(url) = std::env::var("DATABASE_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
        {
            match url.parse::<DbTarget>() {
                Ok(t) => config.db = t,
                Err(e) => Config::command()
                    .error(
                        clap::error::ErrorKind::ValueValidation,
                        format!("DATABASE_URL: {e}"),
                    )
                    .exit(),
            }
        }
        config
    }

    /// Settings for tests and embedding: everything default except the
    /// database file and the NATS URL.
    pub fn for_test(db: impl Into<TestDb>, nats_url: String) -> Config {
        Config {
            db: db.into().0,
            nats_url,
            nats_auth: ptp_nats::NatsAuth::default(),
            listen: "127.0.0.1:0".into(),
            master_name: None,
            master_ttl_secs: 15,
            sqlite_sync_full: false,
            stream_max_age_hours: 168,
            stream_replicas: 1,
            ingest_batch: 32,
            ack_wait_secs: 30,
            max_deliveries: 5,
            retention_days: 0,
            retention_runs: 0,
            incomplete_after_minutes: 1440,
            auto_quarantine_days: 0,
            release_after_clean_runs: 10,
            offline_after_minutes: 1440,
            max_workers: ptp_actors::aggregates::DEFAULT_MAX_WORKERS,
            write_tokens: Vec::new(),
            read_tokens: Vec::new(),
            max_body_mb: 64,
            request_timeout_secs: 30,
            read_cache_mib: 32,
            max_inflight_body_mb: 640,
            max_large_reads: 2,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            webhooks: crate::webhooks::WebhookArgs::default(),
        }
    }

    /// Refuses settings that contradict each other (clap checks each alone).
    pub fn check(&self) -> anyhow::Result<()> {
        self.webhooks.targets()?;
        let needed = self
            .max_body_mb
            .saturating_mul(crate::limits::BODY_MEMORY_FACTOR);
        if self.max_inflight_body_mb < needed {
            anyhow::bail!(
                "--max-inflight-body-mb ({}) must be at least {} × --max-body-mb ({}), i.e. {needed}: \
                 each body is charged {} times its size, and a body of the largest size must fit",
                self.max_inflight_body_mb,
                crate::limits::BODY_MEMORY_FACTOR,
                self.max_body_mb,
                crate::limits::BODY_MEMORY_FACTOR,
            );
        }
        Ok(())
    }

    /// [`Config::master_name`], or the host name, or `ptp-master`.
    pub fn master_name(&self) -> String {
        self.master_name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .or_else(|| gethostname::gethostname().into_string().ok())
            .unwrap_or_else(|| "ptp-master".to_string())
    }
}
