//! The stores behind the writer, one module per database backend. SQLite
//! (the embedded default for one machine) still lives in [`crate::writer`]
//! and [`crate::db`]; [`postgres`] is the store several masters share.
//! Each backend keeps its SQL dialect to itself and gives the same answers.

pub mod postgres;
