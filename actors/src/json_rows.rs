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
//! is a [`sqlx::Error::Decode`] naming the type, never a panic; a REAL
//! comes back bit for bit (SQLite's JSON writes 15 significant digits,
//! which loses the last bits of most values: `select` writes a finite REAL
//! with 17 instead, and serde_json parses them exactly with its
//! `float_roundtrip` feature), so a value read here equals the same value
//! read as a column, or from PostgreSQL. (Checked over 1e-30..1e30;
//! SQLite's decimal conversion may miss the last bit near 1e300, and -0.0
//! comes back as 0.0.)

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
        // 17 digits round-trip every finite double; an infinity keeps
        // SQLite's own rendering (which fails to decode, as before).
        sql.push_str(&format!(
            "CASE WHEN typeof({f}) = 'real' AND abs({f}) < 9e999 \
             THEN json(printf('%!.17g', {f})) ELSE {f} END"
        ));
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

        // Values SQLite's JSON would cut to 15 digits come back exactly:
        // a few by hand, and a thousand spread over 1e-12..1e12.
        let mut exact: Vec<f64> = vec![200.0 / 3.0, 0.1 + 0.2, 1.0 / 3.0, 5e-324, 1e21];
        let mut seed: u64 = 12345;
        for _ in 0..1000 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let mantissa = (seed >> 11) as f64 / (1u64 << 53) as f64;
            exact.push(mantissa * 10f64.powi(((seed >> 40) % 24) as i32 - 12));
        }
        sqlx::query("CREATE TABLE f (n INTEGER, x REAL)")
            .execute(&pool)
            .await
            .expect("create");
        for (n, x) in exact.iter().enumerate() {
            sqlx::query("INSERT INTO f VALUES (?, ?)")
                .bind(n as i64)
                .bind(*x)
                .execute(&pool)
                .await
                .expect("insert");
        }
        let mut qb = select(&["n", "s", "x"], "n");
        qb.push("SELECT n, NULL AS s, x FROM f");
        let rows: Vec<Row> = fetch(qb, &pool).await.expect("floats");
        let back: Vec<u64> = rows.iter().map(|r| r.x.to_bits()).collect();
        let sent: Vec<u64> = exact.iter().map(|x| x.to_bits()).collect();
        assert_eq!(back, sent);

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
