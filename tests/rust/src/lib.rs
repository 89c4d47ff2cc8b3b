//! Test harness for driving a real `sluice` process from Rust client tests.
//!
//! [`Broker::start`] spawns `sluice serve` on free loopback ports with a fresh
//! data dir and waits, bounded, until it is ready; dropping the [`Broker`]
//! stops it (SIGTERM, bounded wait, then SIGKILL). Not for production use.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the broker may take to become ready before a test gives up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd broker may take to exit before it is SIGKILLed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `sluice serve` process owned by one test.
pub struct Broker {
    child: Option<Child>,
    /// Kafka listener, e.g. `127.0.0.1:40123`.
    pub bootstrap: String,
    /// Admin HTTP listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin: String,
    /// Data dir; removed when the broker is dropped.
    pub data_dir: tempfile::TempDir,
    log_path: PathBuf,
}

/// The sluice binary: `$SLUICE_BIN`, else the workspace's debug build.
pub fn sluice_bin() -> PathBuf {
    match std::env::var_os("SLUICE_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/sluice"),
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// GET `path` on `addr` with plain HTTP/1.0; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let sock: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

impl Broker {
    /// Starts `sluice serve` with `extra_args` appended and waits until
    /// `/readyz` answers 200. Panics (with the broker's log) if it does not.
    pub fn start(extra_args: &[&str]) -> Broker {
        let bin = sluice_bin();
        assert!(
            bin.exists(),
            "sluice binary not found at {} (build it with `cargo build -p sluice` or set SLUICE_BIN)",
            bin.display()
        );
        let data_dir = tempfile::Builder::new()
            .prefix("sluice-rust-test-")
            .tempdir()
            .expect("temp data dir");
        let kafka_port = free_port();
        let admin_port = free_port();
        let bootstrap = format!("127.0.0.1:{kafka_port}");
        let admin = format!("127.0.0.1:{admin_port}");
        let log_path = data_dir.path().with_extension("log");
        let log = std::fs::File::create(&log_path).expect("broker log file");
        let child = Command::new(&bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir.path().join("data"))
            .args(["--listen", &bootstrap, "--advertise", &bootstrap])
            .args(["--admin-listen", &admin, "--node-id", "1"])
            .args(extra_args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {}: {err}", bin.display()));
        let mut broker = Broker {
            child: Some(child),
            bootstrap,
            admin,
            data_dir,
            log_path,
        };
        broker.wait_ready();
        broker
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("sluice exited early with {status}\n{}", self.log());
                }
            }
            if let Ok((200, _)) = http_get(&self.admin, "/readyz") {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "sluice not ready within {READY_TIMEOUT:?} (GET /readyz on {})\n{}",
                    self.admin,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The broker's stdout and stderr so far.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        format!(
            "----- sluice log ({}) -----\n{text}",
            self.log_path.display()
        )
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("sluice did not exit within {STOP_TIMEOUT:?} of SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// Deterministic test payload: `len` bytes that depend on `seed`, covering all byte values.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}
