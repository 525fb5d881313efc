//! How a report is told apart and served safely: the marker a rendered
//! report carries at its start ([`is_report`]: `get_report` replaces only
//! its own files) and the `Content-Security-Policy` it is served with
//! ([`content_security_policy`]).
//!
//! Shape: both read the template itself, so they cannot drift from what is
//! rendered: the marker must be in its first bytes, the policy allows its
//! one `<style>` block by hash and nothing else.

/// What `templates/report.html` writes in its `<head>`, within the first
/// [`MARKER_WITHIN`] bytes after `<!doctype html>`: how `get_report` tells a
/// report it wrote (which it may replace) from any other file.
pub const GENERATOR_MARKER: &str = r#"<meta name="generator" content="ptp-mcp">"#;
/// Bytes from the start of a file within which [`GENERATOR_MARKER`] must be.
pub const MARKER_WITHIN: usize = 512;

/// Whether `head` (the first [`MARKER_WITHIN`] bytes of a file, or fewer)
/// starts like a report this module renders.
pub fn is_report(head: &[u8]) -> bool {
    let head = &head[..head.len().min(MARKER_WITHIN)];
    head.starts_with(b"<!doctype html>")
        && head
            .windows(GENERATOR_MARKER.len())
            .any(|w| w == GENERATOR_MARKER.as_bytes())
}

/// The template the report renders; its `<style>` block is the only style
/// [`content_security_policy`] allows.
const TEMPLATE: &str = include_str!("../../templates/report.html");

/// The `Content-Security-Policy` a report is served with (the `/report`
/// page): nothing is loaded from anywhere (`default-src 'none'`), so no
/// script runs, inline or not; the one style allowed is the template's own
/// `<style>` block, by its SHA-256 (its text has no template tags, so every
/// rendered report carries it byte for byte); no base URL, no form
/// targets, no framing by other pages.
pub fn content_security_policy() -> &'static str {
    static POLICY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let style = match style_block(TEMPLATE) {
            Some(css) => {
                use base64::Engine;
                use sha2::Digest;
                let digest = sha2::Sha256::digest(css.as_bytes());
                format!(
                    "'sha256-{}'",
                    base64::engine::general_purpose::STANDARD.encode(digest)
                )
            }
            None => "'none'".to_string(),
        };
        format!(
            "default-src 'none'; style-src {style}; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        )
    });
    &POLICY
}

/// The text of the first `<style>` element of `html`.
fn style_block(html: &str) -> Option<&str> {
    let start = html.find("<style>")? + "<style>".len();
    let len = html[start..].find("</style>")?;
    Some(&html[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_carries_the_marker_at_its_start() {
        assert!(is_report(TEMPLATE.as_bytes()));
        assert!(!is_report(b"<!doctype html><title>notes</title>"));
        assert!(!is_report(b"root:x:0:0:root:/root:/bin/bash"));
        let late = format!("<!doctype html>{}{GENERATOR_MARKER}", " ".repeat(600));
        assert!(!is_report(late.as_bytes()), "too far from the start");
    }

    #[test]
    fn the_policy_allows_the_templates_style_and_nothing_else() {
        let policy = content_security_policy();
        assert!(
            policy.starts_with("default-src 'none'; style-src 'sha256-"),
            "{policy}"
        );
        assert!(
            !policy.contains("unsafe") && !policy.contains("script-src"),
            "{policy}"
        );
        let css = style_block(TEMPLATE).expect("the template has a <style> block");
        assert!(
            !css.contains("{{") && !css.contains("{%"),
            "no template tags in the style: it must render byte for byte"
        );
        assert_eq!(style_block("<p>x</p>"), None);
    }
}
