//! sluice-benches: criterion micro-benchmarks for Sluice crates.
//!
//! `cargo bench -p sluice-benches --bench storage` runs the storage benchmarks (append,
//! sequential read, index and timestamp lookups, open of a 1 GiB log clean and after a
//! crash). Not a default workspace member: criterion takes long to build and CI does not
//! run it. The code lives in `benches/`; this library is empty.
