//! Copying a SQLite store into an empty PostgreSQL one, table by table,
//! row by row, with the keys as they are.
//!
//! What for: the tests of the read side fill a SQLite store through its
//! writer, copy it here and ask both the same questions, so every read is
//! compared on the very same rows whatever the state of the PostgreSQL
//! writer; and it is the way a team moves its history from the embedded
//! store to PostgreSQL.
//!
//! Guarantees: the target's tables are emptied first and the copy is one
//! transaction, so it is all or nothing; every table both schemas have is
//! copied (the schema parity test keeps them the same); values keep their
//! type (BIGINT, DOUBLE PRECISION, TEXT, BYTEA, as the PostgreSQL column
//! says), text with a NUL is stored with U+FFFD as the store does; identity
//! sequences continue after the highest key copied.

use sqlx::{PgPool, Postgres, QueryBuilder, Row, SqlitePool, TypeInfo, ValueRef};

/// PostgreSQL's limit on binds in one statement.
const MAX_BINDS: usize = 65_535;

/// What was copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Tables copied, with their row counts, in copy order.
    pub tables: Vec<(String, u64)>,
}

/// One value in transit.
enum Value {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

/// Copies every table of `sqlite` into `pg` (migrated, its rows replaced).
pub async fn copy_from_sqlite(sqlite: &SqlitePool, pg: &PgPool) -> Result<CopyReport, sqlx::Error> {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name NOT LIKE '_sqlx_%' ORDER BY name",
    )
    .fetch_all(sqlite)
    .await?;
    let mut tx = pg.begin().await?;
    let mut report = CopyReport::default();
    for (table,) in tables {
        // Columns as PostgreSQL types them; a table it lacks is not copied.
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(&table)
        .fetch_all(&mut *tx)
        .await?;
        if columns.is_empty() {
            continue;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&mut *tx)
            .await?;
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM {table}",
            names.join(", ")
        )))
        .fetch_all(sqlite)
        .await?;
        let mut values: Vec<Vec<Value>> = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut out = Vec::with_capacity(columns.len());
            for (i, (name, ty)) in columns.iter().enumerate() {
                let raw = row.try_get_raw(i)?;
                let null = raw.is_null();
                let v = match ty.as_str() {
                    "bigint" | "integer" | "smallint" => {
                        Value::Int(if null { None } else { Some(row.try_get(i)?) })
                    }
                    "double precision" | "real" => {
                        Value::Real(if null { None } else { Some(row.try_get(i)?) })
                    }
                    "bytea" => Value::Bytes(if null { None } else { Some(row.try_get(i)?) }),
                    "text" | "character varying" | "json" | "jsonb" => {
                        let s: Option<String> = if null {
                            None
                        } else if raw.type_info().name() == "BLOB" {
                            let b: Vec<u8> = row.try_get(i)?;
                            Some(String::from_utf8_lossy(&b).into_owned())
                        } else {
                            Some(row.try_get(i)?)
                        };
                        Value::Text(s.map(|s| s.replace('\0', "\u{fffd}")))
                    }
                    other => {
                        return Err(sqlx::Error::Protocol(format!(
                            "cannot copy {table}.{name}: PostgreSQL type {other} is not one the \
                             store uses"
                        )));
                    }
                };
                out.push(v);
            }
            values.push(out);
        }
        let casts: Vec<String> = columns
            .iter()
            .map(|(_, ty)| match ty.as_str() {
                "json" | "jsonb" => format!("::{ty}"),
                _ => String::new(),
            })
            .collect();
        for part in values.chunks((MAX_BINDS / columns.len()).max(1)) {
            let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
                "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE ",
                names.join(", ")
            ));
            q.push_values(part, |mut b, row| {
                for (v, cast) in row.iter().zip(&casts) {
                    match v {
                        Value::Int(x) => b.push_bind(*x),
                        Value::Real(x) => b.push_bind(*x),
                        Value::Text(x) => b.push_bind(x.clone()),
                        Value::Bytes(x) => b.push_bind(x.clone()),
                    };
                    if !cast.is_empty() {
                        b.push_unseparated(cast.as_str());
                    }
                }
            });
            q.build().execute(&mut *tx).await?;
        }
        report.tables.push((table, rows.len() as u64));
    }
    // Identity columns continue after the keys copied.
    let identities: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND is_identity = 'YES'",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (table, column) in identities {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
             COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(report)
}
