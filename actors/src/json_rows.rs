//! Many rows read as one: SQLite builds a JSON array of the rows and sqlx
//! hands over a single value, which serde decodes in one pass.
//!
//! Why: sqlx runs every SQLite connection on its own thread and sends each
//! row of a `fetch_all` over a channel to the waiting task, a thread wake-up
//! per row (~14 µs here, more than SQLite spends finding the row). A page of
//! 50 runs cost ~0.7 ms of hand-offs, a page of 500 cases ~7 ms; as one JSON
//! value the same page is one hand-off (docs/benchmarks.md, item 4).
//!
//! Guarantees: rows keep the order given to [`select`] (an `ORDER BY` inside
//! the aggregate, SQLite ≥ 3.44, which the bundled library is); no rows
//! decode as an empty `Vec`; a value that does not decode into the row type
//! is a [`sqlx::Error::Decode`] naming the type, never a panic.

use serde::de::DeserializeOwned;
use sqlx::{Executor, QueryBuilder, Sqlite};

/// The start of a query returning `fields` of the rows of the inner
/// `SELECT` that the caller pushes next (its result columns must include
/// `fields` and whatever `order_by` names), as one JSON array of objects
/// keyed by field name. Finish it with [`fetch`], which closes the
/// parenthesis.
pub(crate) fn select(fields: &[&str], order_by: &str) -> QueryBuilder<Sqlite> {
    let mut sql = String::from("SELECT json_group_array(json_object(");
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('\'');
        sql.push_str(f);
        sql.push_str("', ");
        sql.push_str(f);
    }
    sql.push_str(") ORDER BY ");
    sql.push_str(order_by);
    sql.push_str(") FROM (");
    QueryBuilder::new(sql)
}

/// Runs a query started with [`select`] and decodes its rows.
pub(crate) async fn fetch<'e, T, E>(
    mut qb: QueryBuilder<Sqlite>,
    executor: E,
) -> Result<Vec<T>, sqlx::Error>
where
    T: DeserializeOwned,
    E: Executor<'e, Database = Sqlite>,
{
    qb.push(")");
    let (json,): (String,) = qb.build_query_as().fetch_one(executor).await?;
    serde_json::from_str(&json).map_err(|e| {
        sqlx::Error::Decode(
            format!(
                "rows as JSON do not decode into {}: {e}",
                std::any::type_name::<T>()
            )
            .into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use sqlx::sqlite::SqlitePoolOptions;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Row {
        n: i64,
        s: Option<String>,
        x: f64,
    }

    #[tokio::test]
    async fn rows_come_back_in_order_with_nulls_and_escapes() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("in-memory sqlite");
        sqlx::query("CREATE TABLE t (n INTEGER, s TEXT, x REAL)")
            .execute(&pool)
            .await
            .expect("create");
        for (n, s, x) in [
            (3, Some("c \"quoted\"\n\u{1}"), 0.5),
            (1, None, 1e-7),
            (2, Some("é ✓"), 2.0),
        ] {
            sqlx::query("INSERT INTO t VALUES (?, ?, ?)")
                .bind(n)
                .bind(s)
                .bind(x)
                .execute(&pool)
                .await
                .expect("insert");
        }
        let mut qb = select(&["n", "s", "x"], "n DESC");
        qb.push("SELECT n, s, x FROM t WHERE n > ").push_bind(1);
        let rows: Vec<Row> = fetch(qb, &pool).await.expect("fetch");
        assert_eq!(
            rows,
            vec![
                Row {
                    n: 3,
                    s: Some("c \"quoted\"\n\u{1}".into()),
                    x: 0.5
                },
                Row {
                    n: 2,
                    s: Some("é ✓".into()),
                    x: 2.0
                },
            ]
        );

        let mut none = select(&["n", "s", "x"], "n");
        none.push("SELECT n, s, x FROM t WHERE n > 10");
        assert!(
            fetch::<Row, _>(none, &pool)
                .await
                .expect("empty")
                .is_empty()
        );

        #[derive(Debug, Deserialize)]
        struct Wrong {
            #[allow(dead_code)]
            n: String,
        }
        let mut wrong = select(&["n"], "n");
        wrong.push("SELECT n FROM t");
        let err = fetch::<Wrong, _>(wrong, &pool)
            .await
            .expect_err("n is a number");
        assert!(err.to_string().contains("Wrong"), "{err}");
    }
}
