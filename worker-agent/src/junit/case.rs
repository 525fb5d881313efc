//! From a `<testcase>` element to the wire's [`TestCase`]: the result
//! children (`<failure>`, `<error>`, `<skipped>`, Surefire's flaky and
//! rerun elements) are accumulated per kind while the reader streams, then
//! [`CaseBuilder::finish`] applies the parent module's outcome, message,
//! traceback and test-id rules.
//!
//! This is where the runner dialects are mapped onto one shape; the rule
//! "error wins over failure, failure over rerun, rerun over skipped" lives
//! only in `finish`.

use ptp_nats::schema::{self, MAX_MESSAGE_BYTES, MAX_OUTPUT_BYTES, MAX_TRACEBACK_BYTES};
use ptp_nats::schema::{Outcome, TestCase};
use quick_xml::events::BytesStart;

use super::JunitError;
use super::attrs::{for_each_attr, parse_duration};
use super::text::{Capped, cap_id};

/// The result children of a testcase.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    Failure,
    Error,
    Skipped,
    /// `flakyFailure` / `flakyError`.
    Flaky,
    /// `rerunFailure` / `rerunError`.
    Rerun,
}

impl Kind {
    pub(super) fn of(name: &str) -> Option<Kind> {
        Some(match name {
            "failure" => Kind::Failure,
            "error" => Kind::Error,
            "skipped" => Kind::Skipped,
            "flakyFailure" | "flakyError" => Kind::Flaky,
            "rerunFailure" | "rerunError" => Kind::Rerun,
            _ => return None,
        })
    }
}

/// What the children of one kind (all `<failure>`s, ...) of a testcase said.
pub(super) struct Acc {
    count: u32,
    /// `message` attribute of the first element of the kind that has one.
    message: Option<String>,
    /// The first `<skipped>` has `type="pytest.xfail"`.
    xfail: bool,
    pub(super) text: Capped,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            count: 0,
            message: None,
            xfail: false,
            text: Capped::new(MAX_TRACEBACK_BYTES),
        }
    }

    /// `(message, traceback)`.
    fn into_detail(self) -> (Option<String>, Option<String>) {
        let traceback = self.text.finish();
        let message = self
            .message
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .or_else(|| {
                traceback
                    .as_deref()
                    .and_then(|t| t.lines().map(str::trim).find(|l| !l.is_empty()))
                    .map(str::to_string)
            })
            .map(|m| schema::truncate_marked(m, MAX_MESSAGE_BYTES));
        (message, traceback)
    }
}

pub(super) struct CaseBuilder {
    name: String,
    classname: Option<String>,
    file: Option<String>,
    pub(super) line: Option<u32>,
    duration: f64,
    status: Option<String>,
    failure: Acc,
    error: Acc,
    skipped: Acc,
    flaky: Acc,
    rerun: Acc,
    pub(super) output: Capped,
}

impl CaseBuilder {
    pub(super) fn open(
        e: &BytesStart<'_>,
        inherited_file: Option<String>,
        pos: u64,
    ) -> Result<CaseBuilder, JunitError> {
        let mut name = String::new();
        let mut classname = None;
        let mut file = None;
        let mut line = None;
        let mut duration = 0.0;
        let mut status = None;
        for_each_attr(e, pos, |key, value| match key {
            "name" => name = value.into_owned(),
            "classname" => classname = Some(value.into_owned()),
            "file" => file = Some(value.into_owned()),
            "line" => line = value.trim().parse().ok(),
            "time" => duration = parse_duration(&value),
            "status" => status = Some(value.trim().to_ascii_lowercase()),
            _ => {}
        })?;
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty()).map(cap_id);
        Ok(CaseBuilder {
            name: cap_id(name),
            classname: nonempty(classname),
            file: nonempty(file).or(inherited_file),
            line,
            duration,
            status,
            failure: Acc::new(),
            error: Acc::new(),
            skipped: Acc::new(),
            flaky: Acc::new(),
            rerun: Acc::new(),
            output: Capped::new(MAX_OUTPUT_BYTES),
        })
    }

    pub(super) fn acc(&mut self, kind: Kind) -> &mut Acc {
        match kind {
            Kind::Failure => &mut self.failure,
            Kind::Error => &mut self.error,
            Kind::Skipped => &mut self.skipped,
            Kind::Flaky => &mut self.flaky,
            Kind::Rerun => &mut self.rerun,
        }
    }

    pub(super) fn start_result(
        &mut self,
        kind: Kind,
        e: &BytesStart<'_>,
        pos: u64,
    ) -> Result<(), JunitError> {
        let acc = self.acc(kind);
        acc.count = acc.count.saturating_add(1);
        let first = acc.count == 1;
        let mut message = None;
        let mut xfail = false;
        for_each_attr(e, pos, |key, value| match key {
            "message" if acc_wants_message(&value) => message = Some(value.into_owned()),
            "type" => xfail = value.trim() == "pytest.xfail",
            _ => {}
        })?;
        if acc.message.is_none() {
            acc.message = message;
        }
        if first {
            acc.xfail = xfail;
        }
        acc.text.separate("\n\n");
        Ok(())
    }

    pub(super) fn finish(self) -> TestCase {
        let retries = self.flaky.count.saturating_add(self.rerun.count);
        let disabled = matches!(
            self.status.as_deref(),
            Some("disabled" | "notrun" | "skipped")
        );
        let (outcome, detail) = if self.error.count > 0 {
            (Outcome::Error, Some(self.error))
        } else if self.failure.count > 0 {
            (Outcome::Failed, Some(self.failure))
        } else if self.rerun.count > 0 {
            (Outcome::Failed, Some(self.rerun))
        } else if self.skipped.count > 0 {
            let o = if self.skipped.xfail {
                Outcome::Xfailed
            } else {
                Outcome::Skipped
            };
            (o, Some(self.skipped))
        } else if disabled {
            (Outcome::Skipped, None)
        } else {
            (Outcome::Passed, None)
        };
        let (message, traceback) = detail.map(Acc::into_detail).unwrap_or((None, None));
        let name = if self.name.is_empty() {
            "(unnamed)".to_string()
        } else {
            self.name
        };
        let test_id = match (&self.classname, &self.file) {
            (Some(c), _) => cap_id(format!("{c}::{name}")),
            (None, Some(f)) => cap_id(format!("{f}::{name}")),
            (None, None) => name.clone(),
        };
        TestCase {
            test_id,
            file: self.file,
            classname: self.classname,
            name,
            outcome,
            duration_secs: self.duration,
            message,
            traceback,
            output: self.output.finish(),
            retries,
            flaky: outcome == Outcome::Passed && self.flaky.count > 0,
            owners: Vec::new(),
            quarantined: false,
        }
    }
}

fn acc_wants_message(value: &str) -> bool {
    !value.trim().is_empty()
}
