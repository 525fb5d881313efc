//! Incoming JSON-RPC messages, screened before rmcp reads them: whatever
//! rmcp would drop in silence or answer wrongly is answered here, the way
//! JSON-RPC 2.0 says.
//!
//! Why: rmcp 3.11 ignores a line it cannot parse (no reply at all, so the
//! client waits out its timeout), answers a `tools/call` whose `arguments`
//! is not an object with -32601 "method not found" (it falls back to a
//! custom request), and echoes `id` and an unknown `method` back, and logs
//! them, whatever their size. [`screen`] runs on every message of both
//! transports (`transport` wires it into the stdio pump and in front of the
//! HTTP service) and either lets it through unchanged or gives the reply.
//!
//! Guarantees, for a message [`screen`] refuses:
//! - not UTF-8, not JSON, or nested deeper than serde_json's limit (128):
//!   -32700 "Parse error", `id` null;
//! - an `id` string longer than [`MAX_ID_BYTES`]: -32600, `id` null;
//! - a `method` longer than [`MAX_METHOD_BYTES`]: -32601 naming its length;
//! - `params` that is not an object, or a `tools/call` whose `name` is not
//!   a string of at most [`MAX_METHOD_BYTES`] or whose `arguments` is not an
//!   object: -32602 "Invalid params" naming the field, with the request's
//!   `id`.
//!
//! A reply never quotes the message: it names fields, types and lengths.
//! Everything else (requests, notifications, responses, and shapes rmcp
//! already answers with -32600) passes unchanged.

use serde_json::{Value, json};

/// Longest message read from stdin, in bytes (rmcp's own line limit): a
/// longer line is discarded and answered with -32600.
pub const MAX_STDIO_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Longest HTTP request body, in bytes (rmcp's default, set explicitly):
/// past it the answer is 413 with a -32600 body.
pub const MAX_HTTP_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Longest string `id` accepted (ids are echoed in every reply).
pub const MAX_ID_BYTES: usize = 256;
/// Longest `method`, and tool `name` in `tools/call`.
pub const MAX_METHOD_BYTES: usize = 128;

/// JSON-RPC error codes used here.
pub const PARSE_ERROR: i64 = -32700;
/// The message is JSON but not a valid request.
pub const INVALID_REQUEST: i64 = -32600;
/// No such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// The method exists, its params do not fit.
pub const INVALID_PARAMS: i64 = -32602;

/// What to do with one incoming message.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Hand it to rmcp unchanged.
    Pass,
    /// Do not hand it on; send this reply instead.
    Reply(Value),
}

/// A JSON-RPC error response.
pub fn error_reply(id: Value, code: i64, message: String) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// What kind of JSON value `v` is, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Screens one message (a stdio line without its newline, or an HTTP body).
pub fn screen(message: &[u8]) -> Verdict {
    let message = message.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(message);
    let text = match std::str::from_utf8(message) {
        Ok(t) => t,
        Err(e) => {
            return Verdict::Reply(error_reply(
                Value::Null,
                PARSE_ERROR,
                format!(
                    "Parse error: the message is not valid UTF-8 (invalid byte at offset {})",
                    e.valid_up_to()
                ),
            ));
        }
    };
    // serde_json stops at 128 levels of nesting with a syntax error, so a
    // 10,000-deep message costs nothing and cannot overflow the stack.
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Verdict::Reply(error_reply(
                Value::Null,
                PARSE_ERROR,
                format!("Parse error: {e}"),
            ));
        }
    };
    let Some(msg) = value.as_object() else {
        return Verdict::Pass;
    };
    let id = match msg.get("id") {
        Some(Value::String(s)) if s.len() > MAX_ID_BYTES => {
            return Verdict::Reply(error_reply(
                Value::Null,
                INVALID_REQUEST,
                format!(
                    "Invalid Request: id is {} bytes, limit {MAX_ID_BYTES}",
                    s.len()
                ),
            ));
        }
        Some(id @ Value::String(_)) => id.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Value::Number(n.clone()),
        // No id: a notification (no reply may be sent); any other id: rmcp
        // answers -32600 without echoing it.
        _ => return Verdict::Pass,
    };
    let Some(method) = msg.get("method") else {
        return Verdict::Pass; // a response to one of our requests
    };
    let refuse = |code, message: String| Verdict::Reply(error_reply(id.clone(), code, message));
    let method = match method {
        Value::String(m) if m.len() > MAX_METHOD_BYTES => {
            return refuse(
                METHOD_NOT_FOUND,
                format!(
                    "Method not found: method is {} bytes, limit {MAX_METHOD_BYTES}",
                    m.len()
                ),
            );
        }
        Value::String(m) => m.as_str(),
        _ => return Verdict::Pass, // rmcp: -32600
    };
    let params = match msg.get("params") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => Some(p),
        Some(other) => {
            return refuse(
                INVALID_PARAMS,
                format!(
                    "Invalid params: params of {method} must be an object, got {}",
                    kind(other)
                ),
            );
        }
    };
    if method != "tools/call" {
        return Verdict::Pass;
    }
    match params.and_then(|p| p.get("name")) {
        Some(Value::String(name)) if name.len() > MAX_METHOD_BYTES => {
            return refuse(
                INVALID_PARAMS,
                format!(
                    "Invalid params: name is {} bytes, limit {MAX_METHOD_BYTES}; tools/list \
                     lists the tools",
                    name.len()
                ),
            );
        }
        Some(Value::String(_)) => {}
        Some(other) => {
            return refuse(
                INVALID_PARAMS,
                format!(
                    "Invalid params: name must be a string (the tool to call), got {}",
                    kind(other)
                ),
            );
        }
        None => {
            return refuse(
                INVALID_PARAMS,
                "Invalid params: name is missing (the tool to call; tools/list lists them)".into(),
            );
        }
    }
    match params.and_then(|p| p.get("arguments")) {
        None | Some(Value::Null) | Some(Value::Object(_)) => Verdict::Pass,
        Some(other) => refuse(
            INVALID_PARAMS,
            format!(
                "Invalid params: arguments must be an object (the tool's arguments by name, \
                 as its input schema lists them), got {}",
                kind(other)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(message: &[u8]) -> Value {
        match screen(message) {
            Verdict::Reply(r) => r,
            Verdict::Pass => panic!("passed: {}", String::from_utf8_lossy(message)),
        }
    }

    #[test]
    fn unparsable_messages_are_parse_errors_with_null_id() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        for bad in [
            b"{not json".as_slice(),
            b"\xff\xfe{}",
            b"{\"id\": 1, \"method\": \"ping\", \"x\": \"\xc3\"}",
            deep.as_bytes(),
            b"",
        ] {
            let r = reply(bad);
            assert_eq!(r["id"], Value::Null, "{r}");
            assert_eq!(r["error"]["code"], PARSE_ERROR, "{r}");
            assert!(
                r["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Parse error")),
                "{r}"
            );
        }
    }

    #[test]
    fn wrong_params_are_invalid_params_with_the_id() {
        let r = reply(
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_summary","arguments":[1,2]}}"#,
        );
        assert_eq!(r["id"], 7);
        assert_eq!(r["error"]["code"], INVALID_PARAMS);
        assert!(
            r["error"]["message"].as_str().is_some_and(|m| m
                .contains("arguments must be an object")
                && m.ends_with("got an array")),
            "{r}"
        );
        let r = reply(br#"{"jsonrpc":"2.0","id":"a","method":"tools/list","params":[1]}"#);
        assert_eq!(
            (r["id"].as_str(), &r["error"]["code"]),
            (Some("a"), &json!(INVALID_PARAMS))
        );
        let r = reply(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#);
        assert!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("name must be a string")),
            "{r}"
        );
        let r = reply(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#);
        assert!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("name is missing")),
            "{r}"
        );
    }

    #[test]
    fn long_ids_and_methods_are_refused_without_echo() {
        let id = "i".repeat(10_000);
        let r = reply(format!(r#"{{"jsonrpc":"2.0","id":"{id}","method":"ping"}}"#).as_bytes());
        assert_eq!(
            (&r["id"], &r["error"]["code"]),
            (&Value::Null, &json!(INVALID_REQUEST))
        );
        let m = "m".repeat(10_000);
        let r = reply(format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{m}"}}"#).as_bytes());
        assert_eq!(r["error"]["code"], METHOD_NOT_FOUND);
        assert!(r.to_string().len() < 200, "{r}");
    }

    #[test]
    fn ordinary_messages_pass() {
        for ok in [
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_summary","arguments":{"limit":1}}}"#.as_slice(),
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_workers"}}"#,
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            br#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
            b"\xEF\xBB\xBF{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}",
            br#"{"jsonrpc":"2.0","id":4,"result":{}}"#,
            br#"{"foo":"bar"}"#,
            br#"[1,2]"#,
        ] {
            assert_eq!(screen(ok), Verdict::Pass, "{}", String::from_utf8_lossy(ok));
        }
    }
}
