//! GitHub Actions annotations: one `::error file=F,line=L,title=T::message`
//! workflow command per failed test, printed on stdout when
//! `GITHUB_ACTIONS=true`, so failures show on the job page and beside the
//! diff of a pull request.
//!
//! Where a failure is: the JUnit `file` and `line` attributes when the report
//! has them (pytest's xunit1 family, PHPUnit, ...), else the last
//! `path:line:` location of the traceback (pytest's default report carries
//! neither attribute but ends every failure with `tests/test_x.py:12:
//! AssertionError`). A path under `GITHUB_WORKSPACE` is made relative to it,
//! as GitHub expects.
//!
//! Escaping follows GitHub's own toolkit (`@actions/core`'s `command.ts`):
//! in the message `%`, `\r` and `\n` become `%25`, `%0D`, `%0A`; in property
//! values `:` and `,` are escaped too (`%3A`, `%2C`). A test name can
//! therefore never end a property or start a second command.
//!
//! GitHub shows at most 10 error annotations per step; the agent prints that
//! many and says how many more failed (the job summary lists them all).

use ptp_nats::schema::TestCase;

/// Most `::error` commands printed (GitHub's limit per step).
pub const MAX_ANNOTATIONS: usize = 10;

/// Longest message in an annotation, in characters.
const MAX_MESSAGE_CHARS: usize = 1000;

/// Escapes a workflow command's message.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a workflow command's property value.
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// The last `path:line` location in a traceback, e.g. pytest's
/// `tests/test_cart.py:19: AssertionError`.
pub fn traceback_location(traceback: &str) -> Option<(String, u32)> {
    traceback.lines().rev().find_map(|l| {
        let l = l.trim_end();
        let (path, rest) = l.split_once(':')?;
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let after = &rest[digits.len()..];
        let line: u32 = digits.parse().ok()?;
        let looks_like_file = !path.is_empty()
            && !path.starts_with(char::is_whitespace)
            && !path.contains(' ')
            && path.contains('.');
        (looks_like_file && (after.is_empty() || after.starts_with(':')))
            .then(|| (path.to_string(), line))
    })
}

/// Where to annotate a case: file and line, as far as known.
pub fn location(
    case: &TestCase,
    line: Option<u32>,
    workspace: Option<&str>,
) -> (Option<String>, Option<u32>) {
    let (file, line) = match (&case.file, line) {
        (Some(f), l) if l.is_some() => (Some(f.clone()), l),
        (file, _) => match case.traceback.as_deref().and_then(traceback_location) {
            Some((f, l)) => (Some(f), Some(l)),
            None => (file.clone(), None),
        },
    };
    let file = file.map(|f| match workspace {
        Some(w) if !w.is_empty() => f
            .strip_prefix(w)
            .map(|r| r.trim_start_matches('/').to_string())
            .unwrap_or(f),
        _ => f,
    });
    (file, line)
}

/// One `::error` command for a failed case.
pub fn error_command(case: &TestCase, line: Option<u32>, workspace: Option<&str>) -> String {
    let (file, line) = location(case, line, workspace);
    let mut props = Vec::new();
    if let Some(f) = file {
        props.push(format!("file={}", escape_property(&f)));
    }
    if let Some(l) = line {
        props.push(format!("line={l}"));
    }
    props.push(format!(
        "title={}",
        escape_property(&format!("{} {}", case.outcome.as_str(), case.test_id))
    ));
    let message = case
        .message
        .as_deref()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or(match case.outcome {
            ptp_nats::schema::Outcome::Error => "the test errored",
            _ => "the test failed",
        });
    let mut message: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    if message.len() < case.message.as_deref().map_or(0, str::len) {
        message.push('…');
    }
    format!("::error {}::{}", props.join(","), escape_data(&message))
}

/// The commands for every failed case (at most [`MAX_ANNOTATIONS`]), and
/// how many failed cases were left out.
pub fn error_commands(
    cases: &[TestCase],
    lines: &[Option<u32>],
    workspace: Option<&str>,
) -> (Vec<String>, usize) {
    let failed: Vec<usize> = (0..cases.len())
        .filter(|&i| cases[i].outcome.is_failure())
        .collect();
    let shown = failed
        .iter()
        .take(MAX_ANNOTATIONS)
        .map(|&i| error_command(&cases[i], lines.get(i).copied().flatten(), workspace))
        .collect();
    (shown, failed.len().saturating_sub(MAX_ANNOTATIONS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptp_nats::schema::Outcome;

    fn failed(test_id: &str, message: Option<&str>, traceback: Option<&str>) -> TestCase {
        TestCase {
            test_id: test_id.into(),
            file: None,
            classname: None,
            name: test_id.into(),
            outcome: Outcome::Failed,
            duration_secs: 0.1,
            message: message.map(String::from),
            traceback: traceback.map(String::from),
            output: None,
            retries: 0,
            flaky: false,
            owners: Vec::new(),
            quarantined: false,
        }
    }

    #[test]
    fn escaping_follows_the_toolkit() {
        assert_eq!(escape_data("50% a\r\nb"), "50%25 a%0D%0Ab");
        assert_eq!(escape_property("a:b,c%\n"), "a%3Ab%2Cc%25%0A");
    }

    #[test]
    fn hostile_names_cannot_end_the_command() {
        let c = failed(
            "t.py::test[a,b:c]\n::warning::x",
            Some("boom\n::error::injected"),
            None,
        );
        let cmd = error_command(&c, None, None);
        assert_eq!(cmd.lines().count(), 1, "{cmd}");
        assert_eq!(
            cmd,
            "::error title=failed t.py%3A%3Atest[a%2Cb%3Ac]%0A%3A%3Awarning%3A%3Ax::boom%0A::error::injected"
        );
    }

    #[test]
    fn location_from_attributes_else_the_traceback() {
        let tb = "def test_total():\n>       assert 1 == 2\nE       assert 1 == 2\n\n/work/repo/tests/test_cart.py:19: AssertionError";
        let c = failed(
            "tests.test_cart::test_total",
            Some("assert 1 == 2"),
            Some(tb),
        );
        assert_eq!(
            location(&c, None, Some("/work/repo")),
            (Some("tests/test_cart.py".into()), Some(19))
        );
        let mut with_attrs = c.clone();
        with_attrs.file = Some("tests/test_cart.py".into());
        assert_eq!(
            location(&with_attrs, Some(7), None),
            (Some("tests/test_cart.py".into()), Some(7))
        );
        let bare = failed("x", None, Some("no location here: 12 apples"));
        assert_eq!(location(&bare, None, None), (None, None));
    }

    #[test]
    fn at_most_ten_and_the_rest_counted() {
        let cases: Vec<_> = (0..13)
            .map(|i| failed(&format!("t{i}"), None, None))
            .collect();
        let (cmds, more) = error_commands(&cases, &[], None);
        assert_eq!((cmds.len(), more), (MAX_ANNOTATIONS, 3));
        assert!(cmds[0].ends_with("::the test failed"), "{}", cmds[0]);
    }
}
