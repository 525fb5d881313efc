//! Transcoding a JUnit report to UTF-8 while it streams, for the reader in
//! `super::reader`: quick-xml reads UTF-8 only, and reports in the wild arrive in
//! UTF-16 (with or without a BOM), ISO-8859-1, windows-1252 or broken UTF-8.
//!
//! Shape: one `BufRead` adapter, [`Transcoder`], between the file and the
//! XML reader, so the parser never sees another encoding and no second copy
//! of the file is made.
//!
//! Guarantees: the output is always valid UTF-8 (bytes that cannot be
//! decoded become U+FFFD, never an error); a multi-byte sequence split
//! across reads is carried over, not replaced; the byte limit given to
//! [`Transcoder::new`] is enforced on the input as it streams.

use std::io::{self, BufRead, Read};

use super::CHUNK;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Encoding {
    Utf8,
    Utf16Le,
    Utf16Be,
    Latin1,
    Windows1252,
}

/// A `BufRead` adapter that hands quick-xml valid UTF-8 whatever the input:
/// strips a UTF-8 BOM, transcodes UTF-16 (BOM or `<?` sniffed) and
/// ISO-8859-1 / windows-1252 (from the XML declaration), and replaces invalid
/// UTF-8 with U+FFFD. It also enforces the byte limit while streaming.
pub(super) struct Transcoder<R> {
    inner: R,
    encoding: Option<Encoding>,
    out: Vec<u8>,
    pos: usize,
    /// Undecoded bytes carried to the next chunk (a split sequence).
    pending: Vec<u8>,
    scratch: Vec<u8>,
    /// Raw bytes consumed from `inner`.
    pub(super) read: u64,
    pub(super) limit: u64,
    pub(super) over_limit: bool,
    /// `inner` reported the end of its input.
    eof: bool,
    /// The reader was handed the end of input (everything was read).
    pub(super) drained: bool,
}

const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

impl<R: BufRead> Transcoder<R> {
    pub(super) fn new(inner: R, limit: u64) -> Transcoder<R> {
        Transcoder {
            inner,
            encoding: None,
            out: Vec::new(),
            pos: 0,
            pending: Vec::new(),
            scratch: Vec::new(),
            read: 0,
            limit,
            over_limit: false,
            eof: false,
            drained: false,
        }
    }

    /// Reads up to 256 bytes (enough for a BOM and the XML declaration, even
    /// from a source that trickles), picks the encoding and leaves those
    /// bytes, minus any BOM, to be decoded first.
    fn sniff(&mut self) -> io::Result<Encoding> {
        let mut head = Vec::new();
        loop {
            let in_decl = if head.len() < 5 {
                b"<?xml".starts_with(&head)
            } else {
                head.starts_with(b"<?xml")
            };
            let decl_done = head.windows(2).any(|w| w == b"?>");
            if head.len() >= 256 || (head.len() >= 4 && (!in_decl || decl_done)) {
                break;
            }
            let data = self.inner.fill_buf()?;
            if data.is_empty() {
                break;
            }
            let take = data.len().min(256 - head.len());
            head.extend_from_slice(&data[..take]);
            self.inner.consume(take);
        }
        self.read += head.len() as u64;
        let (encoding, bom) = match &head[..] {
            [0xEF, 0xBB, 0xBF, ..] => (Encoding::Utf8, 3),
            [0xFF, 0xFE, ..] => (Encoding::Utf16Le, 2),
            [0xFE, 0xFF, ..] => (Encoding::Utf16Be, 2),
            [b'<', 0, b'?', 0, ..] => (Encoding::Utf16Le, 0),
            [0, b'<', 0, b'?', ..] => (Encoding::Utf16Be, 0),
            _ => (declared_encoding(&head), 0),
        };
        head.drain(..bom);
        self.pending = head;
        Ok(encoding)
    }

    fn refill(&mut self) -> io::Result<()> {
        self.out.clear();
        self.pos = 0;
        let encoding = match self.encoding {
            Some(e) => e,
            None => {
                let e = self.sniff()?;
                self.encoding = Some(e);
                e
            }
        };
        while self.out.is_empty() && !self.eof {
            let data = self.inner.fill_buf()?;
            let n = data.len().min(CHUNK);
            self.eof = n == 0;
            self.read += n as u64;
            if self.read > self.limit {
                self.over_limit = true;
                return Err(io::Error::other(format!(
                    "report exceeds the limit of {} bytes",
                    self.limit
                )));
            }
            self.scratch.clear();
            self.scratch.append(&mut self.pending);
            self.scratch.extend_from_slice(&data[..n]);
            self.inner.consume(n);
            let input = &self.scratch[..];
            match encoding {
                Encoding::Utf8 => decode_utf8(input, &mut self.out, &mut self.pending),
                Encoding::Utf16Le => decode_utf16(input, false, &mut self.out, &mut self.pending),
                Encoding::Utf16Be => decode_utf16(input, true, &mut self.out, &mut self.pending),
                Encoding::Latin1 => decode_8bit(input, false, &mut self.out),
                Encoding::Windows1252 => decode_8bit(input, true, &mut self.out),
            }
            // At the end, an incomplete sequence can never complete.
            if self.eof && !self.pending.is_empty() {
                self.pending.clear();
                self.out.extend_from_slice(REPLACEMENT);
            }
        }
        Ok(())
    }
}

impl<R: BufRead> Read for Transcoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Transcoder<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.out.len() {
            self.refill()?;
            self.drained = self.out.is_empty();
        }
        Ok(&self.out[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.out.len());
    }
}

/// The encoding named in an XML declaration at the start of `head`, if it
/// is one of the 8-bit encodings we transcode; UTF-8 otherwise.
fn declared_encoding(head: &[u8]) -> Encoding {
    let head = &head[..head.len().min(256)];
    if !head.starts_with(b"<?xml") {
        return Encoding::Utf8;
    }
    let decl = match head.windows(2).position(|w| w == b"?>") {
        Some(end) => &head[..end],
        None => head,
    };
    let Some(at) = decl.windows(8).position(|w| w == b"encoding") else {
        return Encoding::Utf8;
    };
    let rest = &decl[at + 8..];
    let rest: Vec<u8> = rest
        .iter()
        .copied()
        .skip_while(|b| b.is_ascii_whitespace() || *b == b'=')
        .collect();
    let Some((&quote, value)) = rest.split_first() else {
        return Encoding::Utf8;
    };
    if quote != b'"' && quote != b'\'' {
        return Encoding::Utf8;
    }
    let value: Vec<u8> = value
        .iter()
        .take_while(|b| **b != quote)
        .map(u8::to_ascii_lowercase)
        .collect();
    match &value[..] {
        b"iso-8859-1" | b"iso8859-1" | b"iso_8859-1" | b"latin1" | b"latin-1" | b"l1" => {
            Encoding::Latin1
        }
        b"windows-1252" | b"cp1252" => Encoding::Windows1252,
        _ => Encoding::Utf8,
    }
}

fn decode_utf8(mut input: &[u8], out: &mut Vec<u8>, pending: &mut Vec<u8>) {
    loop {
        match std::str::from_utf8(input) {
            Ok(s) => {
                out.extend_from_slice(s.as_bytes());
                return;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.extend_from_slice(&input[..valid]);
                match e.error_len() {
                    Some(bad) => {
                        out.extend_from_slice(REPLACEMENT);
                        input = &input[valid + bad..];
                    }
                    None => {
                        // An incomplete sequence at the end: wait for more.
                        pending.extend_from_slice(&input[valid..]);
                        return;
                    }
                }
            }
        }
    }
}

fn decode_utf16(input: &[u8], big_endian: bool, out: &mut Vec<u8>, pending: &mut Vec<u8>) {
    let mut units: Vec<u16> = input
        .chunks_exact(2)
        .map(|p| {
            let b = [p[0], p[1]];
            if big_endian {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        })
        .collect();
    let mut keep = input.len() % 2;
    // A high surrogate at the end may pair with the next chunk's first unit.
    if units.last().is_some_and(|u| (0xD800..0xDC00).contains(u)) {
        units.pop();
        keep += 2;
    }
    let mut tmp = [0u8; 4];
    for c in char::decode_utf16(units) {
        let c = c.unwrap_or(char::REPLACEMENT_CHARACTER);
        out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
    }
    pending.extend_from_slice(&input[input.len() - keep..]);
}

/// windows-1252's 0x80..=0x9F (the rest is ISO-8859-1).
const CP1252_HIGH: [char; 32] = [
    '€', '\u{FFFD}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{FFFD}', 'Ž',
    '\u{FFFD}', '\u{FFFD}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{FFFD}',
    'ž', 'Ÿ',
];

fn decode_8bit(input: &[u8], cp1252: bool, out: &mut Vec<u8>) {
    let mut tmp = [0u8; 4];
    for &b in input {
        if b.is_ascii() {
            out.push(b);
            continue;
        }
        let c = match b {
            0x80..=0x9F if cp1252 => CP1252_HIGH[usize::from(b - 0x80)],
            _ => char::from(b),
        };
        out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
    }
}
