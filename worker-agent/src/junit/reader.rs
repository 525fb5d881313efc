//! The streaming XML reader: quick-xml events in, a [`Report`] out. It
//! tracks the open elements (suites, the testcase, its result children,
//! ignored subtrees), routes text to the right capped buffer, and turns
//! quick-xml's errors into [`JunitError`]s that say what went wrong.
//!
//! This shape (an event loop over a small state machine, no DOM) is what
//! keeps memory bounded by the cases kept plus the largest text node. It
//! guarantees the limits of the parent module: depth ([`MAX_DEPTH`]), case
//! count ([`MAX_REPORT_CASES`]) and bytes (through the [`Transcoder`]); no
//! entity is ever expanded.

use std::borrow::Cow;
use std::io::{self, BufRead};
use std::path::Path;

use quick_xml::Reader;
use quick_xml::errors::{Error as XmlError, IllFormedError, SyntaxError};
use quick_xml::escape::{EscapeError, resolve_xml_entity};
use quick_xml::events::{BytesStart, Event};

use super::attrs::{for_each_attr, parse_timestamp};
use super::case::{CaseBuilder, Kind};
use super::encoding::Transcoder;
use super::text::{Capped, cap_id, cut, is_xml_blank};
use super::{JunitError, MAX_DEPTH, MAX_REPORT_CASES, Report, earliest};

/// Reads one report from `src`, refusing more than `limit` bytes (counted
/// after transcoding) and everything the module's guarantees refuse.
pub(super) fn parse_stream<R: BufRead>(
    src: R,
    path: &Path,
    limit: u64,
) -> Result<Report, JunitError> {
    let mut reader = Reader::from_reader(Transcoder::new(src, limit));
    // Defaults: end names checked, empty elements as `Empty`, no trimming.
    let mut buf = Vec::new();
    let mut p = Parser::default();
    loop {
        buf.clear();
        let event = match reader.read_event_into(&mut buf) {
            Ok(ev) => ev,
            Err(e) => {
                let position = reader.error_position();
                return Err(p.xml_error(e, position, reader.get_ref(), path));
            }
        };
        let pos = reader.buffer_position();
        match event {
            Event::Start(e) => p.open(&e, pos)?,
            Event::Empty(e) => {
                p.open(&e, pos)?;
                p.close();
                p.check_cases()?;
            }
            Event::End(_) => {
                p.close();
                p.check_cases()?;
            }
            Event::Text(t) => p.text(&t.xml10_content(), pos)?,
            Event::CData(t) => p.cdata(&t.xml10_content(), pos)?,
            Event::GeneralRef(r) => {
                let resolved: Cow<'_, str> = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => Cow::Owned(c.to_string()),
                        Ok(None) | Err(_) => {
                            return Err(JunitError::NotXml {
                                position: pos,
                                detail: format!("invalid character reference &{};", cut(&r, 40)),
                            });
                        }
                    }
                } else {
                    match resolve_xml_entity(&r) {
                        Some(s) => Cow::Borrowed(s),
                        None => {
                            return Err(JunitError::UnknownEntity {
                                name: cut(&r, 100).to_string(),
                                position: pos,
                            });
                        }
                    }
                };
                p.reference(&resolved, pos)?;
            }
            Event::DocType(d) => {
                if d.to_ascii_uppercase().contains("<!ENTITY") {
                    return Err(JunitError::Entity);
                }
                p.prolog_seen = true;
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => p.prolog_seen = true,
            Event::Eof => return p.finish(pos),
        }
    }
}

/// Where text inside a testcase goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sink {
    Nowhere,
    Output,
    Result(Kind),
}

/// One open element.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Frame {
    /// `<testsuites>` / `<testsuite>`: may hold suites and cases.
    Container,
    /// `<testcase>`.
    Case,
    /// Any element inside a testcase, with where its text goes.
    Within(Sink),
    /// Anything else outside testcases (`<properties>`, ...), with all it holds.
    Ignored,
}

#[derive(Default)]
struct Parser {
    report: Report,
    stack: Vec<Frame>,
    /// The `file` attribute of each open container (parallel to the
    /// `Container` frames on the stack).
    suite_files: Vec<Option<String>>,
    case: Option<CaseBuilder>,
    root_seen: bool,
    /// An XML declaration, comment, PI or DOCTYPE was seen before the root.
    prolog_seen: bool,
}

impl Parser {
    fn open(&mut self, e: &BytesStart<'_>, pos: u64) -> Result<(), JunitError> {
        let depth = self.stack.len() + 1;
        if depth > MAX_DEPTH {
            return Err(JunitError::TooDeep { depth });
        }
        let local = e.local_name();
        let name = local.as_ref();
        let frame = match self.stack.last().copied() {
            None => {
                if self.root_seen {
                    return Err(JunitError::NotXml {
                        position: pos,
                        detail: format!(
                            "a second root element <{}> after the first one ended: the file holds more than one XML document (reports concatenated?); write each report to its own file",
                            cut(e.name().as_ref(), 100)
                        ),
                    });
                }
                if name != "testsuites" && name != "testsuite" {
                    return Err(JunitError::NotJunit {
                        root: cut(e.name().as_ref(), 100).to_string(),
                    });
                }
                self.root_seen = true;
                self.open_container(e, name == "testsuite", pos)?;
                Frame::Container
            }
            Some(Frame::Container) => match name {
                "testsuite" | "testsuites" => {
                    self.open_container(e, name == "testsuite", pos)?;
                    Frame::Container
                }
                "testcase" => {
                    let inherited = self.suite_files.iter().rev().flatten().next().cloned();
                    self.case = Some(CaseBuilder::open(e, inherited, pos)?);
                    Frame::Case
                }
                _ => Frame::Ignored,
            },
            Some(Frame::Ignored) => Frame::Ignored,
            Some(Frame::Case) => match (Kind::of(name), self.case.as_mut()) {
                (Some(kind), Some(case)) => {
                    case.start_result(kind, e, pos)?;
                    Frame::Within(Sink::Result(kind))
                }
                _ => self.within(name, Sink::Nowhere),
            },
            Some(Frame::Within(sink)) => self.within(name, sink),
        };
        self.stack.push(frame);
        Ok(())
    }

    /// The frame for an element inside a testcase (other than its direct
    /// result children): output elements collect output, anything else
    /// inherits its parent's sink (so `<stackTrace>` inside `<flakyFailure>`
    /// feeds that element's text).
    fn within(&mut self, name: &str, parent: Sink) -> Frame {
        match (name, self.case.as_mut()) {
            ("system-out" | "system-err", Some(case)) => {
                case.output.separate("\n");
                Frame::Within(Sink::Output)
            }
            _ => Frame::Within(parent),
        }
    }

    fn open_container(
        &mut self,
        e: &BytesStart<'_>,
        is_suite: bool,
        pos: u64,
    ) -> Result<(), JunitError> {
        let mut file = None;
        let mut hint = None;
        let mut timestamp = None;
        for_each_attr(e, pos, |key, value| match key {
            "file" if !value.trim().is_empty() => file = Some(value.into_owned()),
            "timestamp" => timestamp = parse_timestamp(&value),
            "name" => {
                hint = match (is_suite, value.trim()) {
                    (true, "pytest") => Some("pytest"),
                    (false, "jest tests") => Some("jest"),
                    (false, "Mocha Tests") => Some("mocha"),
                    (false, "nextest-run") => Some("nextest"),
                    _ => None,
                }
            }
            _ => {}
        })?;
        if is_suite {
            self.report.suites += 1;
        }
        if self.report.runner_hint.is_none() {
            self.report.runner_hint = hint.map(str::to_string);
        }
        self.report.timestamp = earliest(self.report.timestamp, timestamp);
        self.suite_files.push(file.map(cap_id));
        Ok(())
    }

    fn check_cases(&self) -> Result<(), JunitError> {
        if self.report.cases.len() > MAX_REPORT_CASES {
            return Err(JunitError::TooManyCases {
                limit: MAX_REPORT_CASES,
            });
        }
        Ok(())
    }

    fn close(&mut self) {
        match self.stack.pop() {
            Some(Frame::Container) => {
                self.suite_files.pop();
            }
            Some(Frame::Case) => {
                if let Some(case) = self.case.take() {
                    self.report.lines.push(case.line);
                    self.report.cases.push(case.finish());
                }
            }
            _ => {}
        }
    }

    fn sink(&mut self) -> Option<&mut Capped> {
        let Some(Frame::Within(sink)) = self.stack.last().copied() else {
            return None;
        };
        let case = self.case.as_mut()?;
        match sink {
            Sink::Nowhere => None,
            Sink::Output => Some(&mut case.output),
            Sink::Result(kind) => Some(&mut case.acc(kind).text),
        }
    }

    fn text(&mut self, s: &str, pos: u64) -> Result<(), JunitError> {
        if self.stack.is_empty() {
            if is_xml_blank(s) {
                return Ok(());
            }
            return Err(self.outside_root(s, pos));
        }
        if let Some(sink) = self.sink() {
            sink.push(s);
        }
        Ok(())
    }

    fn cdata(&mut self, s: &str, pos: u64) -> Result<(), JunitError> {
        if self.stack.is_empty() {
            return Err(self.outside_root("<![CDATA[", pos));
        }
        if let Some(sink) = self.sink() {
            sink.push(s);
        }
        Ok(())
    }

    fn reference(&mut self, s: &str, pos: u64) -> Result<(), JunitError> {
        if self.stack.is_empty() {
            return Err(self.outside_root("&", pos));
        }
        if let Some(sink) = self.sink() {
            sink.push(s);
        }
        Ok(())
    }

    fn outside_root(&self, s: &str, pos: u64) -> JunitError {
        let s = s.trim_start();
        let line = s.lines().next().unwrap_or_default();
        let detail = if self.root_seen {
            format!("text after the root element ended: {:?}", cut(line, 60))
        } else {
            format!(
                "text where the root element should start (this looks like plain text, not XML): {:?}",
                cut(line, 60)
            )
        };
        JunitError::NotXml {
            position: pos,
            detail,
        }
    }

    fn finish(self, pos: u64) -> Result<Report, JunitError> {
        if !self.stack.is_empty() {
            let open: Vec<&str> = self
                .stack
                .iter()
                .map(|f| match f {
                    Frame::Container => "testsuite(s)",
                    Frame::Case => "testcase",
                    Frame::Within(_) | Frame::Ignored => "element",
                })
                .collect();
            return Err(JunitError::Truncated {
                position: pos,
                detail: format!(
                    "{} element(s) still open, innermost: <{}>",
                    open.len(),
                    open.last().copied().unwrap_or("?")
                ),
            });
        }
        if !self.root_seen {
            if self.prolog_seen {
                return Err(JunitError::Truncated {
                    position: pos,
                    detail: "the XML prolog is there but no root element follows".into(),
                });
            }
            return Err(JunitError::Empty);
        }
        Ok(self.report)
    }

    fn xml_error(
        &self,
        e: XmlError,
        position: u64,
        src: &Transcoder<impl BufRead>,
        path: &Path,
    ) -> JunitError {
        if src.over_limit {
            return JunitError::TooLarge {
                size: src.read,
                limit: src.limit,
            };
        }
        match e {
            XmlError::Io(io) => JunitError::Io {
                path: path.to_path_buf(),
                source: io::Error::new(io.kind(), io.to_string()),
            },
            // Every syntax error but one is "the input ended inside a tag,
            // comment, CDATA section, ..."; `<!` followed by something
            // unknown is the exception, unless the input ended right there.
            XmlError::Syntax(s) if s != SyntaxError::InvalidBangMarkup || src.drained => {
                JunitError::Truncated {
                    position,
                    detail: s.to_string(),
                }
            }
            XmlError::IllFormed(IllFormedError::UnclosedReference) if src.drained => {
                JunitError::Truncated {
                    position,
                    detail: "the input ends inside an entity reference".into(),
                }
            }
            XmlError::Escape(EscapeError::UnrecognizedEntity(_, name)) => {
                JunitError::UnknownEntity {
                    name: cut(&name, 100).to_string(),
                    position,
                }
            }
            other => JunitError::NotXml {
                position,
                detail: other.to_string(),
            },
        }
    }
}
