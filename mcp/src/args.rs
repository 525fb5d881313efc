//! Tool arguments at the boundary: every tool's arguments go through
//! [`parse`], which bounds every string before serde reads a byte of it,
//! then deserializes into the tool's argument struct.
//!
//! Why here and not in each tool: a 10 MB `project` must not reach the
//! master (as a URL it is refused with a misleading "cannot reach"), and
//! serde's own messages quote what they refuse (`unknown field`, `invalid
//! type: string "…"`), so an unbounded string would come back whole in the
//! tool error and in the log. Checking sizes first, on the raw JSON object,
//! covers every tool, every argument and every type mistake at once.
//!
//! Guarantees:
//! - An argument name longer than [`MAX_ARGUMENT_NAME_BYTES`] or a string
//!   longer than its argument's limit ([`limit_for`]), also inside arrays and
//!   objects, is refused with a sentence naming the argument, its length and
//!   the limit, echoing at most [`ECHO_CHARS`] characters of it.
//! - The limits are the wire schema's (`ptp_nats::schema`: short fields 512
//!   bytes, run ids 128, test ids 4096), so anything the master stores can
//!   be asked for. They are defined here once because `ptp-mcp` talks to the
//!   master over HTTP only and does not depend on the wire crate; a test
//!   checks they stay equal.

use std::sync::Arc;

use rmcp::handler::server::common::schema_for_input;
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::text::marker;

/// Longest project, branch, worker id, status, runner and other names, in
/// bytes (the wire schema's `MAX_SHORT_BYTES`).
pub const MAX_NAME_BYTES: usize = 512;
/// Longest run id, in bytes (the wire schema's `MAX_RUN_ID_BYTES`).
pub const MAX_RUN_ID_BYTES: usize = 128;
/// Longest test id, in bytes (the wire schema's `MAX_TEST_ID_BYTES`).
pub const MAX_TEST_ID_BYTES: usize = 4096;
/// Longest `output_path` and `filter`, in bytes (their own, finer rules
/// apply after this one).
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest argument name, in bytes (the real ones are under 20).
pub const MAX_ARGUMENT_NAME_BYTES: usize = 64;
/// Characters of a refused value echoed back in an error.
pub const ECHO_CHARS: usize = 100;

/// The size limit of the string argument `name`, in bytes.
pub fn limit_for(name: &str) -> usize {
    match name {
        "run_id" | "base_run_id" | "head_run_id" => MAX_RUN_ID_BYTES,
        "test_id" => MAX_TEST_ID_BYTES,
        "output_path" | "filter" => MAX_PATH_BYTES,
        _ => MAX_NAME_BYTES,
    }
}

/// At most [`ECHO_CHARS`] characters of `s`, control characters shown as
/// `?`, with the trim marker when cut: safe to put in an error or a log.
pub fn echo(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(ECHO_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let total = s.chars().count();
    if total > ECHO_CHARS {
        out.push_str(&marker(total - ECHO_CHARS));
    }
    out
}

/// Checks every argument name and string value of `args` against its limit.
pub fn check_sizes(args: &JsonObject) -> Result<(), String> {
    for (name, value) in args {
        check_name(name)?;
        check_value(name, value, limit_for(name))?;
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_ARGUMENT_NAME_BYTES {
        return Err(format!(
            "an argument name is {} bytes, limit {MAX_ARGUMENT_NAME_BYTES}: {:?}; see the \
             tool's input schema for the accepted arguments",
            name.len(),
            echo(name)
        ));
    }
    Ok(())
}

fn check_value(name: &str, value: &Value, limit: usize) -> Result<(), String> {
    match value {
        Value::String(s) if s.len() > limit => Err(format!(
            "{name} is {} bytes, limit {limit}: {:?}; give a shorter value",
            s.len(),
            echo(s)
        )),
        Value::Array(items) => items.iter().try_for_each(|v| check_value(name, v, limit)),
        Value::Object(fields) => fields.iter().try_for_each(|(k, v)| {
            check_name(k)?;
            check_value(name, v, limit)
        }),
        _ => Ok(()),
    }
}

/// Bounds `args` ([`check_sizes`]), then deserializes them into `T`; the
/// error is a sentence for the tool error.
pub fn parse<T: DeserializeOwned>(tool: &str, args: JsonObject) -> Result<T, String> {
    check_sizes(&args)?;
    serde_json::from_value(Value::Object(args)).map_err(|e| {
        format!(
            "invalid arguments for {tool}: {e}. See the tool's input schema for the accepted \
             arguments."
        )
    })
}

/// `None` for a missing or blank string (models often send "").
pub fn given(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// The input schema of a tool, from its argument struct's doc comments.
pub fn input_schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    schema_for_input::<T>().unwrap_or_else(|e| {
        panic!(
            "invalid input schema for {}: {e}",
            std::any::type_name::<T>()
        )
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> JsonObject {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn limits_are_the_wire_schemas() {
        use ptp_nats::schema;
        assert_eq!(MAX_NAME_BYTES, schema::MAX_SHORT_BYTES);
        assert_eq!(MAX_RUN_ID_BYTES, schema::MAX_RUN_ID_BYTES);
        assert_eq!(MAX_TEST_ID_BYTES, schema::MAX_TEST_ID_BYTES);
    }

    #[test]
    fn long_strings_are_refused_naming_argument_length_and_limit() {
        let big = "p".repeat(10 * 1024 * 1024);
        let e = check_sizes(&obj(json!({"project": big}))).expect_err("too long");
        assert!(
            e.starts_with("project is 10485760 bytes, limit 512: \"ppp"),
            "{}",
            echo(&e)
        );
        assert!(e.contains("[trimmed 10485660 chars]"), "{}", echo(&e));
        assert!(e.len() < 400, "{} bytes", e.len());
        // Inside arrays and objects, and whatever type serde expects there.
        for args in [
            json!({"limit": ["x".repeat(600)]}),
            json!({"branch": {"k": "x".repeat(600)}}),
        ] {
            let e = check_sizes(&obj(args)).expect_err("nested");
            assert!(e.contains("is 600 bytes, limit 512"), "{e}");
        }
        let e = check_sizes(&obj(json!({"x".repeat(5000): 1}))).expect_err("name");
        assert!(
            e.contains("an argument name is 5000 bytes, limit 64"),
            "{e}"
        );
        assert!(e.len() < 400, "{e}");
        assert!(check_sizes(&obj(json!({"run_id": "r".repeat(129)}))).is_err());
        assert!(check_sizes(&obj(json!({"run_id": "r".repeat(128)}))).is_ok());
        assert!(check_sizes(&obj(json!({"test_id": "t".repeat(4096)}))).is_ok());
        assert!(check_sizes(&obj(json!({"test_id": "t".repeat(4097)}))).is_err());
    }

    #[test]
    fn echo_is_short_and_printable() {
        assert_eq!(echo("a\nb"), "a?b");
        let e = echo(&"é".repeat(1000));
        assert!(e.starts_with(&"é".repeat(100)), "{e}");
        assert!(e.ends_with("… [trimmed 900 chars]"), "{e}");
    }
}
