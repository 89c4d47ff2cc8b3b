//! sluice-benches: criterion micro-benchmarks for Sluice crates (`cargo bench -p sluice-benches`).
//!
//! Not a default workspace member: criterion takes long to build and CI does not run it.
