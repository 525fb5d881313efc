//! The pytest-platform worker agent as a library: the binary `ptp-agent` is a
//! thin shell over these modules so tests can exercise each piece.

pub mod junit;
