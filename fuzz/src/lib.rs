//! Fuzz targets for soup-core (run them with `scripts/fuzz.sh SECONDS`).
//!
//! The harness lives in `harness.rs`, which the stable test suite also
//! compiles (`tests/tests/fuzz_corpus.rs`) to replay the committed corpus.

pub mod harness;
