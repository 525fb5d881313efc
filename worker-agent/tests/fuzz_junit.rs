//! Property-based fuzzing of the JUnit parser ([`junit::parse_bytes`]).
//!
//! What is generated:
//! - well-formed reports from a model: random trees of `<testsuites>` /
//!   `<testsuite>` / `<testcase>` with `<failure>`, `<error>`, `<skipped>`,
//!   flaky and rerun elements, `<system-out>` / `<system-err>`, ignored
//!   elements (some hiding `<testcase>`s that must not count), random
//!   attributes (odd times such as `1,5`, `-3`, `NaN`, `1e309`, ``), text
//!   with XML-special characters, CDATA, character and predefined entity
//!   references, namespace prefixes, comments, a `<!DOCTYPE>` with or
//!   without entity declarations, deep nesting, a BOM, UTF-16 or
//!   ISO-8859-1;
//! - the same reports mutated at the byte level (flips, cuts, deletions,
//!   splices of hostile snippets: undefined `&foo;`, `&#x0;`, `&#1114112;`,
//!   stray `<![CDATA[` / `<!--`, invalid UTF-8, entity declarations, ...);
//! - random bytes.
//!
//! What must hold: the parser never panics. A well-formed report under the
//! limits parses to exactly the `<testcase>` elements the model emitted, in
//! order, with the names, outcomes, retries and suite count the rules in
//! `src/junit/mod.rs` give; a `<!DOCTYPE>` declaring entities is refused, and so
//! is nesting over [`junit::MAX_DEPTH`]. Anything else is either refused
//! with a non-empty message or parses into cases that pass the wire
//! schema's validation. Separate tests feed 50 MB hostile reports and check
//! the peak RSS.
//!
//! Bound: each property runs its default case count (below), a few
//! seconds in a debug build, so it runs in CI with the rest of the suite.
//! `PROPTEST_CASES` overrides the count for a longer run:
//!
//! ```text
//! PROPTEST_CASES=200000 cargo test --release -p ptp-agent --test fuzz_junit
//! ```

use std::fmt::Write as _;

use proptest::prelude::*;
use proptest::sample::Index;
use ptp_agent::junit::{self, JunitError, MAX_DEPTH, Report};
use ptp_nats::schema::Outcome;
use ptp_test_support::fuzz::{ByteEdit, config};

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

/// A piece of character data inside an element.
#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    CData(String),
    /// `&#N;` or `&#xN;`.
    CharRef(char, bool),
    /// One of the five predefined entities.
    Entity(&'static str),
    Comment(String),
}

/// An element the parser ignores, `depth` levels deep; the innermost level
/// holds `pieces` and, when `hidden`, a `<testcase><failure/></testcase>`
/// and a `<failure>` that must not count (they are not children of a suite /
/// testcase), two more levels.
#[derive(Debug, Clone)]
struct Junk {
    tag: &'static str,
    depth: usize,
    pieces: Vec<Piece>,
    hidden: bool,
}

/// A direct child of a `<testcase>`.
#[derive(Debug, Clone)]
enum Child {
    /// `failure`, `error`, `skipped`, `flakyFailure`, ...
    Result {
        tag: &'static str,
        message: Option<String>,
        kind: Option<&'static str>,
        pieces: Vec<Piece>,
    },
    /// `system-out` / `system-err`.
    Output(&'static str, Vec<Piece>),
    Junk(Junk),
    Piece(Piece),
}

#[derive(Debug, Clone)]
struct Case {
    prefix: bool,
    name: Option<String>,
    classname: Option<String>,
    time: Option<String>,
    status: Option<&'static str>,
    children: Vec<Child>,
}

#[derive(Debug, Clone)]
enum Node {
    Suite {
        tag: &'static str,
        prefix: bool,
        name: Option<String>,
        timestamp: Option<String>,
        children: Vec<Node>,
    },
    Case(Case),
    Junk(Junk),
    Piece(Piece),
}

#[derive(Debug, Clone, Copy)]
enum Doctype {
    None,
    Plain,
    Entities,
}

#[derive(Debug, Clone, Copy)]
enum Encoding {
    Utf8,
    Utf8Bom,
    Utf16Le,
    Utf16Be,
    Latin1,
}

#[derive(Debug, Clone)]
struct Doc {
    decl: bool,
    doctype: Doctype,
    encoding: Encoding,
    root: Node,
}

/// What the parser must report for one testcase.
#[derive(Debug, PartialEq)]
struct Expected {
    name: String,
    outcome: Outcome,
    retries: u32,
    flaky: bool,
}

impl Case {
    fn expected(&self) -> Expected {
        let count = |tags: &[&str]| {
            self.children
                .iter()
                .filter(|c| matches!(c, Child::Result { tag, .. } if tags.contains(tag)))
                .count() as u32
        };
        let first_skip_type = self.children.iter().find_map(|c| match c {
            Child::Result {
                tag: "skipped",
                kind,
                ..
            } => Some(kind.map(str::trim)),
            _ => None,
        });
        let flaky = count(&["flakyFailure", "flakyError"]);
        let rerun = count(&["rerunFailure", "rerunError"]);
        let disabled = self
            .status
            .map(|s| s.trim().to_ascii_lowercase())
            .is_some_and(|s| ["disabled", "notrun", "skipped"].contains(&s.as_str()));
        let outcome = if count(&["error"]) > 0 {
            Outcome::Error
        } else if count(&["failure"]) > 0 || rerun > 0 {
            Outcome::Failed
        } else if let Some(kind) = first_skip_type {
            if kind == Some("pytest.xfail") {
                Outcome::Xfailed
            } else {
                Outcome::Skipped
            }
        } else if disabled {
            Outcome::Skipped
        } else {
            Outcome::Passed
        };
        Expected {
            name: match self.name.as_deref() {
                None | Some("") => "(unnamed)".into(),
                Some(n) => n.into(),
            },
            outcome,
            retries: flaky + rerun,
            flaky: outcome == Outcome::Passed && flaky > 0,
        }
    }
}

/// The cases and `<testsuite>` elements the parser must see, and the
/// deepest nesting.
#[derive(Debug, Default)]
struct Tally {
    cases: Vec<Expected>,
    suites: usize,
    max_depth: usize,
}

impl Tally {
    fn walk(&mut self, node: &Node, depth: usize) {
        self.max_depth = self.max_depth.max(depth);
        match node {
            Node::Suite { tag, children, .. } => {
                self.suites += usize::from(*tag == "testsuite");
                for c in children {
                    self.walk(c, depth + 1);
                }
            }
            Node::Case(case) => {
                self.cases.push(case.expected());
                for c in &case.children {
                    let inner = match c {
                        Child::Result { .. } | Child::Output(..) => 1,
                        Child::Junk(j) => j.depth + 2 * usize::from(j.hidden),
                        Child::Piece(_) => 0,
                    };
                    self.max_depth = self.max_depth.max(depth + inner);
                }
            }
            Node::Junk(j) => {
                let inner = j.depth.saturating_sub(1) + 2 * usize::from(j.hidden);
                self.max_depth = self.max_depth.max(depth + inner);
            }
            Node::Piece(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

fn attr(out: &mut String, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        write!(out, " {key}=\"").ok();
        escape(v, out);
        out.push('"');
    }
}

fn tag_name(prefix: bool, tag: &str) -> String {
    if prefix {
        format!("ns:{tag}")
    } else {
        tag.to_string()
    }
}

fn render_piece(p: &Piece, out: &mut String) {
    // Writing to a String cannot fail.
    let _ = match p {
        Piece::Text(t) => {
            escape(t, out);
            Ok(())
        }
        // `]]>` cannot appear inside a CDATA section: split it.
        Piece::CData(t) => write!(out, "<![CDATA[{}]]>", t.replace("]]>", "]]]]><![CDATA[>")),
        Piece::CharRef(c, true) => write!(out, "&#x{:X};", u32::from(*c)),
        Piece::CharRef(c, false) => write!(out, "&#{};", u32::from(*c)),
        Piece::Entity(e) => write!(out, "&{e};"),
        Piece::Comment(t) => write!(out, "<!--{}-->", t.replace('-', "_")),
    };
}

fn render_pieces(ps: &[Piece], out: &mut String) {
    for p in ps {
        render_piece(p, out);
    }
}

fn render_junk(j: &Junk, out: &mut String) {
    for _ in 0..j.depth {
        write!(out, "<{}>", j.tag).ok();
    }
    render_pieces(&j.pieces, out);
    if j.hidden {
        out.push_str("<testcase name=\"hidden\"><failure/></testcase><failure message=\"x\"/>");
    }
    for _ in 0..j.depth {
        write!(out, "</{}>", j.tag).ok();
    }
}

fn render_node(n: &Node, out: &mut String) {
    match n {
        Node::Suite {
            tag,
            prefix,
            name,
            timestamp,
            children,
        } => {
            let t = tag_name(*prefix, tag);
            write!(out, "<{t}").ok();
            attr(out, "name", name.as_deref());
            attr(out, "timestamp", timestamp.as_deref());
            attr(out, "tests", Some("12"));
            if children.is_empty() {
                out.push_str("/>");
            } else {
                out.push('>');
                for c in children {
                    render_node(c, out);
                }
                write!(out, "</{t}>").ok();
            }
        }
        Node::Case(c) => {
            let t = tag_name(c.prefix, "testcase");
            write!(out, "<{t}").ok();
            attr(out, "name", c.name.as_deref());
            attr(out, "classname", c.classname.as_deref());
            attr(out, "time", c.time.as_deref());
            attr(out, "status", c.status);
            if c.children.is_empty() {
                out.push_str("/>");
                return;
            }
            out.push('>');
            for child in &c.children {
                match child {
                    Child::Result {
                        tag,
                        message,
                        kind,
                        pieces,
                    } => {
                        write!(out, "<{tag}").ok();
                        attr(out, "message", message.as_deref());
                        attr(out, "type", *kind);
                        out.push('>');
                        render_pieces(pieces, out);
                        write!(out, "</{tag}>").ok();
                    }
                    Child::Output(tag, pieces) => {
                        write!(out, "<{tag}>").ok();
                        render_pieces(pieces, out);
                        write!(out, "</{tag}>").ok();
                    }
                    Child::Junk(j) => render_junk(j, out),
                    Child::Piece(p) => render_piece(p, out),
                }
            }
            write!(out, "</{t}>").ok();
        }
        Node::Junk(j) => render_junk(j, out),
        Node::Piece(p) => render_piece(p, out),
    }
}

impl Doc {
    fn render(&self) -> Vec<u8> {
        let mut s = String::new();
        let latin1 = matches!(self.encoding, Encoding::Latin1) && self.text_is_latin1();
        if latin1 {
            s.push_str("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n");
        } else if self.decl {
            s.push_str("<?xml version=\"1.0\"?>\n");
        }
        match self.doctype {
            Doctype::None => {}
            Doctype::Plain => s.push_str("<!DOCTYPE testsuites>\n"),
            Doctype::Entities => s.push_str(
                "<!DOCTYPE t [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;\">]>\n",
            ),
        }
        s.push_str("<!-- generated -->\n");
        render_node(&self.root, &mut s);
        s.push_str("\n<!-- end -->\n");
        match self.encoding {
            Encoding::Utf8 => s.into_bytes(),
            Encoding::Utf8Bom => [&[0xEF, 0xBB, 0xBF][..], s.as_bytes()].concat(),
            Encoding::Utf16Le => [0xFEFFu16]
                .into_iter()
                .chain(s.encode_utf16())
                .flat_map(u16::to_le_bytes)
                .collect(),
            Encoding::Utf16Be => [0xFEFFu16]
                .into_iter()
                .chain(s.encode_utf16())
                .flat_map(u16::to_be_bytes)
                .collect(),
            Encoding::Latin1 if latin1 => s.chars().map(|c| c as u8).collect(),
            Encoding::Latin1 => s.into_bytes(),
        }
    }

    fn text_is_latin1(&self) -> bool {
        let mut s = String::new();
        render_node(&self.root, &mut s);
        s.chars().all(|c| u32::from(c) < 0x100)
    }

    fn tally(&self) -> Tally {
        let mut t = Tally::default();
        t.walk(&self.root, 1);
        t
    }
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Whether XML 1.0 allows `c` (the `Char` production).
fn is_xml_char(c: char) -> bool {
    let u = u32::from(c);
    (u >= 0x20 || matches!(u, 0x9 | 0xA | 0xD)) && !(0xFFFE..=0xFFFF).contains(&u)
}

/// Characters XML 1.0 allows, weighted towards the ones that need escaping.
/// Attribute values get no tab / newline / carriage return (attribute value
/// normalization turns them into spaces).
fn xml_char(in_attr: bool) -> impl Strategy<Value = char> {
    let special = prop::sample::select(vec!['<', '>', '&', '"', '\'', ';', '#', ' ', ']', '-']);
    let ws = prop::sample::select(if in_attr {
        vec![' ']
    } else {
        vec!['\t', '\n', ' ']
    });
    // Mapped, not filtered: filters would pile up rejects in long runs.
    let any_valid = any::<char>().prop_map(|c| if is_xml_char(c) && c >= ' ' { c } else { '?' });
    prop_oneof![
        4 => prop::char::range('a', 'z'),
        2 => special,
        1 => ws,
        2 => any_valid,
        1 => prop::sample::select(vec!['é', 'ÿ', '€', '😀', '\u{FFFD}', '\u{85}', '\u{2028}']),
    ]
}

fn xml_string(in_attr: bool, max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(xml_char(in_attr), 0..max).prop_map(String::from_iter)
}

fn piece() -> impl Strategy<Value = Piece> {
    let any_ref = any::<char>().prop_map(|c| if is_xml_char(c) { c } else { '\u{FFFD}' });
    prop_oneof![
        4 => xml_string(false, 40).prop_map(Piece::Text),
        1 => xml_string(false, 40).prop_map(Piece::CData),
        1 => (any_ref, any::<bool>()).prop_map(|(c, hex)| Piece::CharRef(c, hex)),
        1 => prop::sample::select(vec!["amp", "lt", "gt", "quot", "apos"]).prop_map(Piece::Entity),
        1 => xml_string(false, 10).prop_map(Piece::Comment),
    ]
}

fn pieces() -> impl Strategy<Value = Vec<Piece>> {
    prop::collection::vec(piece(), 0..4)
}

/// Ignored elements: mostly shallow, sometimes around or past
/// [`MAX_DEPTH`].
fn junk() -> impl Strategy<Value = Junk> {
    (
        prop::sample::select(vec!["properties", "property", "x", "stackTrace", "a:b"]),
        prop_oneof![8 => 1usize..4, 1 => 55usize..70],
        pieces(),
        any::<bool>(),
    )
        .prop_map(|(tag, depth, pieces, hidden)| Junk {
            tag,
            depth,
            pieces,
            hidden,
        })
}

/// `time` values as runners write them, and as they should not.
fn time_attr() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            " ",
            "1,5",
            "0,03",
            "2,120.532",
            "1.234,5",
            "1.2.3",
            "-3",
            "-0",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "Infinity",
            "1e309",
            "-1e309",
            "1e-400",
            "0x10",
            "1_000",
            "12 ms",
            "3\u{a0}600,5",
            ",",
            ".",
            "1,2,3",
            "+4",
            "99999999999999999999999",
        ])
        .prop_map(str::to_string),
        any::<f64>().prop_map(|f| f.to_string()),
        (0u32..100_000).prop_map(|ms| format!("{}.{:03}", ms / 1000, ms % 1000)),
        xml_string(true, 8),
    ]
}

fn child() -> impl Strategy<Value = Child> {
    let result = (
        prop::sample::select(vec![
            "failure",
            "error",
            "skipped",
            "flakyFailure",
            "flakyError",
            "rerunFailure",
            "rerunError",
        ]),
        prop::option::of(xml_string(true, 30)),
        prop::option::of(prop::sample::select(vec![
            "pytest.xfail",
            " pytest.xfail ",
            "pytest.skip",
            "",
            "AssertionError",
        ])),
        pieces(),
    )
        .prop_map(|(tag, message, kind, pieces)| Child::Result {
            tag,
            message,
            kind,
            pieces,
        });
    prop_oneof![
        4 => result,
        2 => (prop::sample::select(vec!["system-out", "system-err"]), pieces())
            .prop_map(|(t, p)| Child::Output(t, p)),
        1 => junk().prop_map(Child::Junk),
        1 => piece().prop_map(Child::Piece),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::bool::weighted(0.1),
        prop::option::weighted(0.9, xml_string(true, 30)),
        prop::option::of(xml_string(true, 20)),
        prop::option::of(time_attr()),
        prop::option::weighted(
            0.2,
            prop::sample::select(vec!["disabled", "NotRun", " skipped ", "passed", "run"]),
        ),
        prop::collection::vec(child(), 0..4),
    )
        .prop_map(|(prefix, name, classname, time, status, children)| Case {
            prefix,
            name,
            classname,
            time,
            status,
            children,
        })
}

fn timestamp_attr() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "2024-05-01T12:00:00",
            "2024-05-01T12:00:00.123+02:00",
            "2024-05-01 12:00:00",
            "2024-05-01",
            "2024-02-30T25:61:00",
            "+262143-12-31T23:59:59Z",
            "-262144-01-01T00:00:00Z",
            "Tue, 1 Jul 2003 10:52:37 +0200",
            "",
            "yesterday",
        ])
        .prop_map(str::to_string),
        xml_string(true, 12),
    ]
}

fn suite_tree() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        6 => case().prop_map(Node::Case),
        1 => junk().prop_map(Node::Junk),
        1 => piece().prop_map(Node::Piece),
    ];
    leaf.prop_recursive(3, 40, 6, |inner| {
        (
            prop::sample::select(vec!["testsuite", "testsuites"]),
            prop::bool::weighted(0.1),
            prop::option::of(prop_oneof![
                Just("pytest".to_string()),
                xml_string(true, 10)
            ]),
            prop::option::of(timestamp_attr()),
            prop::collection::vec(inner, 0..6),
        )
            .prop_map(|(tag, prefix, name, timestamp, children)| Node::Suite {
                tag,
                prefix,
                name,
                timestamp,
                children,
            })
    })
}

fn doc() -> impl Strategy<Value = Doc> {
    let root = (
        prop::sample::select(vec!["testsuite", "testsuites"]),
        prop::collection::vec(suite_tree(), 0..5),
    )
        .prop_map(|(tag, children)| Node::Suite {
            tag,
            prefix: false,
            name: None,
            timestamp: None,
            children,
        });
    (
        any::<bool>(),
        prop_oneof![
            8 => Just(Doctype::None),
            1 => Just(Doctype::Plain),
            1 => Just(Doctype::Entities),
        ],
        prop_oneof![
            6 => Just(Encoding::Utf8),
            1 => Just(Encoding::Utf8Bom),
            1 => Just(Encoding::Utf16Le),
            1 => Just(Encoding::Utf16Be),
            1 => Just(Encoding::Latin1),
        ],
        root,
    )
        .prop_map(|(decl, doctype, encoding, root)| Doc {
            decl,
            doctype,
            encoding,
            root,
        })
}

fn hostile_snippet() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            &b"&foo;"[..],
            b"&nbsp;",
            b"&#x0;",
            b"&#0;",
            b"&#1114112;",
            b"&#xD800;",
            b"&#x;",
            b"&",
            b"&#",
            b"&amp",
            b"<![CDATA[",
            b"]]>",
            b"<!--",
            b"-->",
            b"<?",
            b"?>",
            b"<!",
            b"<!DOCTYPE x [<!ENTITY a \"b\">]>",
            b"<!DOCTYPE x SYSTEM \"file:///etc/passwd\">",
            b"<!ENTITY",
            b"\xff",
            b"\xc3",
            b"\xe2\x82",
            b"\xef\xbb\xbf",
            b"\xed\xa0\x80",
            b"\0",
            b"\r",
            b"</testsuite>",
            b"</testcase>",
            b"<testcase>",
            b"<testcase/>",
            b"<testsuite>",
            b"<failure>",
            b"<skipped type=\"pytest.xfail\"/>",
            b"\"",
            b"'",
            b"=",
            b":",
            b"<",
            b">",
            b"/",
            b" a=\"1\"",
            b" name=\"x\" name=\"y\"",
            b"<?xml version=\"1.0\" encoding=\"windows-1252\"?>",
            b"<?xml version=\"1.1\"?>",
            b"<\0?\0",
            b"\xff\xfe",
        ])
        .prop_map(<[u8]>::to_vec),
        prop::collection::vec(any::<u8>(), 1..8),
        (1usize..100).prop_map(|n| "<a>".repeat(n).into_bytes()),
    ]
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Flip(i, b)),
        1 => any::<Index>().prop_map(ByteEdit::Truncate),
        3 => (any::<Index>(), hostile_snippet()).prop_map(|(i, s)| ByteEdit::Splice(i, s)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| ByteEdit::Delete(i, n)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| ByteEdit::Duplicate(i, n)),
    ]
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// What holds for any input: a refusal explains itself; an accepted report
/// is one the master will accept.
fn check_any(result: &Result<Report, JunitError>) -> Result<(), TestCaseError> {
    match result {
        Ok(r) => {
            for c in &r.cases {
                prop_assert_eq!(c.validate(), Ok(()), "case {:?}", c);
                prop_assert!(c.duration_secs.is_finite() && c.duration_secs >= 0.0);
                prop_assert!(!c.name.is_empty());
            }
            prop_assert_eq!(r.counts().total, r.cases.len() as u64);
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(msg.starts_with("report ") && msg.len() > 20, "{}", msg);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(384))]

    #[test]
    fn well_formed_reports_parse_exactly(doc in doc()) {
        let bytes = doc.render();
        let tally = doc.tally();
        let result = junit::parse_bytes(&bytes);
        check_any(&result)?;
        match (doc.doctype, tally.max_depth > MAX_DEPTH, result) {
            (Doctype::Entities, _, r) => prop_assert!(matches!(r, Err(JunitError::Entity)), "{:?}", r),
            (_, true, r) => prop_assert!(matches!(r, Err(JunitError::TooDeep { .. })), "{:?}", r),
            (_, false, Err(e)) => prop_assert!(false, "refused a well-formed report: {e}"),
            (_, false, Ok(r)) => {
                let got: Vec<Expected> = r
                    .cases
                    .iter()
                    .map(|c| Expected {
                        name: c.name.clone(),
                        outcome: c.outcome,
                        retries: c.retries,
                        flaky: c.flaky,
                    })
                    .collect();
                prop_assert_eq!(got, tally.cases);
                prop_assert_eq!(r.suites, tally.suites);
            }
        }
    }

}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn mutated_reports_never_panic(
        doc in doc(),
        edits in prop::collection::vec(byte_edit(), 1..5),
    ) {
        let mut bytes = doc.render();
        for e in &edits {
            e.apply(&mut bytes);
        }
        check_any(&junit::parse_bytes(&bytes))?;
    }
}

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn random_bytes_never_panic(
        prefix in prop::sample::select(vec![&b""[..], b"<testsuite>", b"<?xml version=\"1.0\"?>", b"\xff\xfe<\0"]),
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        check_any(&junit::parse_bytes(&[prefix, &bytes[..]].concat()))?;
    }
}

// ---------------------------------------------------------------------------
// Large hostile inputs: a resource bound, not a timing one
// ---------------------------------------------------------------------------

/// Peak resident set size of this process so far, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

const MB: usize = 1024 * 1024;

/// Parses `xml` and asserts the peak RSS stays under `bound` bytes. The
/// peak is process-wide (other tests run in parallel threads), so the
/// bound is generous.
fn parse_within(xml: &[u8], bound: u64) -> Result<Report, JunitError> {
    let result = junit::parse_bytes(xml);
    let peak = peak_rss();
    assert!(
        peak < bound,
        "peak RSS {} MB after parsing {} MB, bound {} MB",
        peak >> 20,
        xml.len() >> 20,
        bound >> 20
    );
    result
}

/// Peak RSS allowed while the 50 MB inputs below are parsed (each test
/// holds its input, ~50 MB, plus whatever runs in parallel).
const BOUND: u64 = 1024 * MB as u64;

#[test]
fn large_output_and_ignored_elements_stay_bounded() {
    // 50 MB of ignored elements and one 20 MB output: kept as 16 KiB.
    let mut xml = String::with_capacity(52 * MB);
    xml.push_str("<testsuites><properties>");
    while xml.len() < 30 * MB {
        xml.push_str("<property name=\"k\" value=\"v &amp; w\"/><x><y/></x>");
    }
    xml.push_str("</properties><testsuite><testcase name=\"big\"><system-out>");
    while xml.len() < 50 * MB {
        xml.push_str("line of output &lt;&gt; \n");
    }
    xml.push_str("</system-out></testcase></testsuite></testsuites>");
    let r = parse_within(xml.as_bytes(), BOUND).expect("parses");
    assert_eq!(r.cases.len(), 1);
    assert!(
        r.cases[0]
            .output
            .as_deref()
            .is_some_and(|o| o.len() < 17 * 1024)
    );
}

#[test]
fn large_nesting_is_refused_early() {
    // 50 MB of nesting: refused at MAX_DEPTH + 1, long before the end.
    let xml = "<testsuite>".repeat(50 * MB / 11);
    let e = parse_within(xml.as_bytes(), BOUND).expect_err("too deep");
    assert!(matches!(e, JunitError::TooDeep { depth } if depth == MAX_DEPTH + 1));
}

#[test]
fn large_billion_laughs_is_refused_unexpanded() {
    // Billion laughs, padded to 50 MB: refused at the DOCTYPE, never expanded.
    let mut xml = String::from("<!DOCTYPE t [<!ENTITY a \"aaaaaaaaaa\">");
    for i in 1..10 {
        let refs = format!("&e{};", i - 1).repeat(10);
        write!(xml, "<!ENTITY e{i} \"{refs}\">").ok();
    }
    xml = xml.replace("&e0;", "&a;");
    xml.push_str("]><testsuite>");
    while xml.len() < 50 * MB {
        xml.push_str("<testcase name=\"&e9;\"/>");
    }
    xml.push_str("</testsuite>");
    let e = parse_within(xml.as_bytes(), BOUND).expect_err("entities");
    assert!(matches!(e, JunitError::Entity), "{e:?}");

    // Undefined entities without a DOCTYPE are refused, not expanded.
    let xml = "<testsuite><testcase name=\"&e9;\"/></testsuite>";
    assert!(matches!(
        junit::parse_bytes(xml.as_bytes()),
        Err(JunitError::UnknownEntity { .. })
    ));
}

#[test]
fn many_cases_cost_memory_in_proportion() {
    // Every `<testcase/>` becomes a kept case: 5 MB of them is ~480,000
    // cases. Measured at ~25 bytes of RSS per byte of such a report (50 MB:
    // 1.2 GB peak), so this checks the proportion at a CI-friendly size.
    let mut xml = String::from("<testsuite>");
    while xml.len() < 5 * MB {
        xml.push_str("<testcase/>");
    }
    xml.push_str("</testsuite>");
    let before = peak_rss();
    let r = parse_within(xml.as_bytes(), before + 40 * 5 * MB as u64).expect("parses");
    assert_eq!(r.cases.len(), (5 * MB - 11) / 11 + 1);
}

#[test]
fn too_many_cases_are_refused_with_memory_bounded() {
    // One case past the limit, in bare `<testcase/>` elements (the most
    // cases per byte a report can carry): refused, and the memory held
    // before refusing stays within the bound.
    let mut xml = String::with_capacity((junit::MAX_REPORT_CASES + 2) * 11 + 32);
    xml.push_str("<testsuite>");
    for _ in 0..=junit::MAX_REPORT_CASES {
        xml.push_str("<testcase/>");
    }
    xml.push_str("</testsuite>");
    let e = parse_within(xml.as_bytes(), BOUND).expect_err("too many cases");
    assert!(
        matches!(e, JunitError::TooManyCases { limit } if limit == junit::MAX_REPORT_CASES),
        "{e:?}"
    );
    assert!(e.to_string().contains("split the run"), "{e}");
}
