//! Reading and editing argv: the program's base name, gotestsum, an
//! option's value, dropping an option with its value.
//!
//! Shared by planning, selecting and listing, which all edit a user's
//! command without a shell; the guarantee is that `--` ends the options
//! looked at ([`option_value`]) and that a dropped option takes its value
//! with it (`-t x` and `-t=x` alike).

use std::path::Path;

pub(super) fn basename(s: &str) -> &str {
    Path::new(s)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(s)
}

pub(super) fn is_gotestsum(argv: &[String]) -> bool {
    argv.first().is_some_and(|a| basename(a) == "gotestsum")
}

/// The value of the first of `names` in `args` (`--x=v` or `--x v`).
pub(super) fn option_value<'a>(args: &'a [String], names: &[&str]) -> Option<&'a str> {
    for (i, a) in args.iter().enumerate() {
        if a == "--" {
            break;
        }
        for n in names {
            if let Some(rest) = a.strip_prefix(n) {
                if let Some(v) = rest.strip_prefix('=') {
                    return Some(v);
                }
                if rest.is_empty() {
                    return args.get(i + 1).map(String::as_str);
                }
            }
        }
    }
    None
}

/// `argv` without the options `names` and their values (`-t x`, `-t=x`).
pub(super) fn drop_option(argv: &[String], names: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut skip_next = false;
    for a in argv {
        if skip_next {
            skip_next = false;
            continue;
        }
        if names.contains(&a.as_str()) {
            skip_next = true;
            continue;
        }
        if names
            .iter()
            .any(|n| a.strip_prefix(n).is_some_and(|r| r.starts_with('=')))
        {
            continue;
        }
        out.push(a.clone());
    }
    out
}
