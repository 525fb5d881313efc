//! The current owners of tests on PostgreSQL (`test_owners`), replaced for
//! every test a run carries in the transaction that completes it, as
//! `store::sqlite::owners` does (see [`crate::owners`]).
//!
//! SQLite expands each case's owners column with `json_each`; here the
//! column is parsed in Rust ([`named`]) instead of with
//! `jsonb_array_elements_text`: PostgreSQL's JSON refuses the escape
//! `\u0000`, which an owner with a NUL is written as, and the batch would
//! then fail forever. An owner is stored as every text here, U+0000 as
//! U+FFFD.

use std::collections::BTreeSet;

use serde_json::Value;
use sqlx::postgres::PgConnection;

use super::pg_text;

/// The owners a stored owners column names, as SQLite's
/// `json_each(owners) ... WHERE type = 'text'` gives them: the strings of
/// the array (of an object's values; a lone string is itself).
fn named(column: &str) -> Result<Vec<String>, sqlx::Error> {
    let value: Value = serde_json::from_str(column).map_err(|e| sqlx::Error::ColumnDecode {
        index: "owners".into(),
        source: format!("stored owners are not JSON: {e}").into(),
    })?;
    let strings = |values: Vec<Value>| {
        values
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect()
    };
    Ok(match value {
        Value::Array(values) => strings(values),
        Value::Object(members) => strings(members.into_iter().map(|(_, v)| v).collect()),
        Value::String(s) => vec![s],
        _ => Vec::new(),
    })
}

/// Replaces the current owners of every test run `run_id` (of `project`,
/// just completed) carries with the owners it named.
pub(super) async fn record_owners(
    conn: &mut PgConnection,
    run_id: &str,
    project: &str,
) -> Result<(), sqlx::Error> {
    let (known, named_any): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM test_owners WHERE project = $1), \
                EXISTS (SELECT 1 FROM test_cases WHERE run_id = $2 AND owners IS NOT NULL)",
    )
    .bind(project)
    .bind(run_id)
    .fetch_one(&mut *conn)
    .await?;
    if known {
        sqlx::query(
            "DELETE FROM test_owners WHERE project = $1 \
             AND test_id IN (SELECT test_id FROM test_cases WHERE run_id = $2)",
        )
        .bind(project)
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    }
    if !named_any {
        return Ok(());
    }
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT test_id, owners FROM test_cases \
         WHERE run_id = $1 AND owners IS NOT NULL",
    )
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut rows: BTreeSet<(String, String)> = BTreeSet::new();
    for (test_id, column) in columns {
        for owner in named(&column)? {
            rows.insert((test_id.clone(), pg_text(&owner).into_owned()));
        }
    }
    let (tests, owners): (Vec<String>, Vec<String>) = rows.into_iter().unzip();
    sqlx::query(
        "INSERT INTO test_owners (project, test_id, owner) \
         SELECT $1, t, o FROM unnest($2::text[], $3::text[]) AS u (t, o) \
         ON CONFLICT DO NOTHING",
    )
    .bind(project)
    .bind(&tests)
    .bind(&owners)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::named;

    /// What SQLite's `json_each(...) WHERE type = 'text'` yields.
    #[test]
    fn owners_are_the_strings_of_the_column() {
        let got = named(r#"["@a", 3, "b\u0000c", null, "@a"]"#).expect("parses");
        assert_eq!(got, ["@a", "b\0c", "@a"]);
        assert_eq!(named(r#""@solo""#).expect("parses"), ["@solo"]);
        assert_eq!(named("7").expect("parses"), Vec::<String>::new());
        assert!(named("[not json").is_err());
    }
}
