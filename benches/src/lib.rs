//! Benchmarks: criterion micro-benchmarks live in `benches/`; this library is the
//! db_bench-style workload driver (`bt-bench`), run against our engine and, side by
//! side in the same process, against fjall.

pub mod db_bench;
pub mod megastore_counter;
pub mod report;
pub mod stores;
