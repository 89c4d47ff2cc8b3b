//! sluice-benches: criterion micro-benchmarks for Sluice crates, and the end-to-end load tools.
//!
//! `cargo bench -p sluice-benches --bench storage` runs the storage benchmarks (append,
//! sequential read, index and timestamp lookups, open of a 1 GiB log clean and after a
//! crash). Not a default workspace member: criterion takes long to build and CI does not
//! run it. The code lives in `benches/`.
//!
//! `sluice-producer-perf` and `sluice-consumer-perf` (in `src/bin/`) are librdkafka-based
//! counterparts of Kafka's `kafka-producer-perf-test` and `kafka-consumer-perf-test`;
//! `benches/run-matrix.sh` runs them as a standard matrix. [`perf`] holds what they share.

pub mod perf;
