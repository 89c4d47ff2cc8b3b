//! The few things that differ between production and the deterministic simulation
//! (feature `sim`, tests/sim.rs): the TCP types, how blocking file I/O runs, and where
//! randomness comes from. Production uses tokio's TCP, `spawn_blocking` and the OS RNG;
//! the simulation uses turmoil's simulated TCP, runs file I/O inline (no threads outside the
//! simulation's control) and draws every random number from one seeded generator.

use std::io;

use uuid::Uuid;

#[cfg(not(feature = "sim"))]
pub(crate) use tokio::net::{TcpListener, TcpStream};
#[cfg(feature = "sim")]
pub(crate) use turmoil::net::{TcpListener, TcpStream};

/// openraft's async runtime.
#[cfg(not(feature = "sim"))]
pub(crate) type Runtime = openraft::TokioRuntime;
#[cfg(feature = "sim")]
pub(crate) type Runtime = crate::sim::SimRuntime;

/// A random v4 UUID (seeded in the simulation).
pub(crate) fn random_uuid() -> Uuid {
    uuid::Builder::from_random_bytes(random_u128().to_le_bytes()).into_uuid()
}

pub(crate) fn random_u128() -> u128 {
    #[cfg(not(feature = "sim"))]
    {
        Uuid::new_v4().as_u128()
    }
    #[cfg(feature = "sim")]
    {
        crate::sim::random_u128()
    }
}

/// Runs blocking file I/O: on tokio's blocking pool in production, inline in the simulation.
pub(crate) async fn run_blocking<T, F>(f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    #[cfg(not(feature = "sim"))]
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(io::Error::other)?
    }
    #[cfg(feature = "sim")]
    {
        f()
    }
}
