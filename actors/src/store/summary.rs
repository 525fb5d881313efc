//! The per-run test summary's format, the same on every store: what a
//! run's summary holds, its binary encoding ([`encode`], [`decode`]), and
//! SQLite's `SUM` reproduced in Rust ([`SqliteSum`], [`group`]) so a store
//! whose own `SUM` adds otherwise writes byte-identical summaries. The
//! table and the SQL that fills it live with each backend
//! (`store::sqlite::run_tests`, `store::postgres::run_tests`); the format's
//! description is in `store::sqlite::run_tests`.

use crate::model::Outcome;

/// The format byte that opens every summary.
const FORMAT: u8 = 1;
const OUTCOME_BITS: u8 = 0b0_0111;
const HAS_RAN: u8 = 0b0_1000;
const HAS_ALL: u8 = 0b1_0000;

/// SQLite's `SUM` over doubles, bit for bit: since 3.43 it adds with
/// Kahan-Babuška-Neumaier compensation and adds the error term at the end
/// unless that overflowed (infinite or NaN); no value gives NULL.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SqliteSum {
    sum: f64,
    err: f64,
    n: u64,
}

impl SqliteSum {
    /// Adds one value (SQLite's `kahanBabuskaNeumaierStep`).
    pub(crate) fn add(&mut self, r: f64) {
        let s = self.sum;
        let t = s + r;
        if s.abs() > r.abs() {
            self.err += (s - t) + r;
        } else {
            self.err += (r - t) + s;
        }
        self.sum = t;
        self.n += 1;
    }

    /// The sum (SQLite's `sumFinalize`): `None` when nothing was added.
    pub(crate) fn value(&self) -> Option<f64> {
        match self.n {
            0 => None,
            _ if self.err.is_finite() => Some(self.sum + self.err),
            _ => Some(self.sum),
        }
    }
}

/// SQLite's `GROUP_SQL` (`store::sqlite::run_tests`) in Rust, for backends
/// whose `SUM` is not SQLite's:
/// `cases` are one run's (test_key, outcome code, duration) in the order
/// SQLite reads them for that statement (by test key, then outcome, chunk
/// and index: `cases_by_run_test` with the primary key after it).
pub(crate) fn group(
    cases: impl IntoIterator<Item = (i64, i64, f64)>,
) -> Result<Vec<TestSummary>, sqlx::Error> {
    let mut tests = Vec::new();
    let mut open: Option<(i64, i64, SqliteSum, SqliteSum)> = None;
    for (key, code, secs) in cases {
        match &mut open {
            Some((k, worst, ran, all)) if *k == key => {
                *worst = (*worst).min(code);
                if code <= 3 {
                    ran.add(secs);
                }
                all.add(secs);
            }
            _ => {
                if let Some(done) = open.take() {
                    tests.push(summary_of(done.0, done.1, done.2.value(), done.3.value())?);
                }
                let (mut ran, mut all) = (SqliteSum::default(), SqliteSum::default());
                if code <= 3 {
                    ran.add(secs);
                }
                all.add(secs);
                open = Some((key, code, ran, all));
            }
        }
    }
    if let Some(done) = open {
        tests.push(summary_of(done.0, done.1, done.2.value(), done.3.value())?);
    }
    Ok(tests)
}

/// One row of [`GROUP_SQL`] as a [`TestSummary`].
pub(crate) fn summary_of(
    key: i64,
    code: i64,
    ran: Option<f64>,
    all: Option<f64>,
) -> Result<TestSummary, sqlx::Error> {
    let worst = Outcome::from_code(code).ok_or_else(|| {
        sqlx::Error::Protocol(format!("a stored case has unknown outcome code {code}"))
    })?;
    Ok(TestSummary {
        key,
        worst,
        ran_secs: ran.unwrap_or(0.0),
        all_secs: all.unwrap_or(0.0),
    })
}

/// One test of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestSummary {
    /// `tests.test_key`.
    pub key: i64,
    /// Worst outcome of its cases.
    pub worst: Outcome,
    /// Summed duration of its cases with outcome codes 0..=3, seconds
    /// (0 when it has none).
    pub ran_secs: f64,
    /// Summed duration of all its cases, seconds.
    pub all_secs: f64,
}

impl TestSummary {
    /// Whether slow tests count it in its run: it has a case that ran
    /// (outcome code 0..=3), not only skips and expected failures.
    pub fn ran(&self) -> bool {
        self.worst.code() <= 3
    }
}

/// A stored summary that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first byte is not a known format.
    #[error("test summary of unknown format {0}")]
    Format(u8),
    /// It ends inside a value.
    #[error("test summary cut short")]
    Truncated,
    /// A varint longer than 64 bits.
    #[error("test summary holds an oversized varint")]
    Varint,
    /// An outcome code no outcome has.
    #[error("test summary holds unknown outcome code {0}")]
    Outcome(u8),
    /// Bytes after the last test.
    #[error("test summary has {0} bytes after its last test")]
    Trailing(usize),
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encodes `tests` (sorted by key for a short encoding; any order
/// round-trips).
pub fn encode(tests: &[TestSummary]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + tests.len() * 10);
    out.push(FORMAT);
    put_varint(&mut out, tests.len() as u64);
    let mut prev = 0i64;
    for t in tests {
        put_varint(&mut out, t.key.wrapping_sub(prev) as u64);
        prev = t.key;
        let ran = t.ran_secs.to_bits() != 0;
        let all = t.all_secs.to_bits() != t.ran_secs.to_bits();
        let mut head = t.worst.code() as u8 & OUTCOME_BITS;
        if ran {
            head |= HAS_RAN;
        }
        if all {
            head |= HAS_ALL;
        }
        out.push(head);
        if ran {
            out.extend_from_slice(&t.ran_secs.to_le_bytes());
        }
        if all {
            out.extend_from_slice(&t.all_secs.to_le_bytes());
        }
    }
    out
}

/// A cursor over an encoded summary.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.bytes.get(self.at).ok_or(DecodeError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::Varint);
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Varint)
    }

    fn f64(&mut self) -> Result<f64, DecodeError> {
        let end = self.at + 8;
        let raw = self.bytes.get(self.at..end).ok_or(DecodeError::Truncated)?;
        let mut le = [0u8; 8];
        le.copy_from_slice(raw);
        self.at = end;
        Ok(f64::from_le_bytes(le))
    }
}

/// Decodes what [`encode`] wrote.
pub fn decode(bytes: &[u8]) -> Result<Vec<TestSummary>, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let format = r.byte()?;
    if format != FORMAT {
        return Err(DecodeError::Format(format));
    }
    let n = r.varint()?;
    // Each test takes at least two bytes: never trust the count further.
    let mut tests = Vec::with_capacity((n as usize).min(bytes.len() / 2));
    let mut prev = 0i64;
    for _ in 0..n {
        let key = prev.wrapping_add(r.varint()? as i64);
        prev = key;
        let head = r.byte()?;
        let code = head & OUTCOME_BITS;
        let worst = Outcome::from_code(i64::from(code)).ok_or(DecodeError::Outcome(code))?;
        if head & !(OUTCOME_BITS | HAS_RAN | HAS_ALL) != 0 {
            return Err(DecodeError::Outcome(head));
        }
        let ran_secs = if head & HAS_RAN != 0 { r.f64()? } else { 0.0 };
        let all_secs = if head & HAS_ALL != 0 {
            r.f64()?
        } else {
            ran_secs
        };
        tests.push(TestSummary {
            key,
            worst,
            ran_secs,
            all_secs,
        });
    }
    match bytes.len() - r.at {
        0 => Ok(tests),
        rest => Err(DecodeError::Trailing(rest)),
    }
}

/// A summary read from the store, as a sqlx error when unreadable.
pub(crate) fn decode_stored(bytes: &[u8]) -> Result<Vec<TestSummary>, sqlx::Error> {
    decode(bytes).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// The error for a stored run without a summary.
pub(crate) fn missing(run_id: &str) -> sqlx::Error {
    sqlx::Error::Protocol(format!("run {run_id} is stored without its test summary"))
}
