//! One client connection: cut the byte stream into frames, decode each request, hand it to
//! its handler, and write the responses back in request order.
//!
//! Requests on one connection are handled one at a time, as Kafka does; a pipelining client
//! gets its responses in the order it sent the requests. Frames already buffered are handled
//! before the socket is read again, and their responses leave in one write.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use sluice_protocol::frame::{peek_length, split_frame, LENGTH_PREFIX_BYTES};
use sluice_protocol::{
    decode_request, encode_response, encode_response_segments, ApiKey, DecodeError, EncodeError,
    Response,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::broker::Broker;
use crate::handlers;

/// Resolves once the broker is shutting down (never, if the signal is gone).
async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        let stopping = *shutdown.borrow_and_update();
        if stopping {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// How long a request still running at shutdown may take before its connection closes.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);
const READ_BUFFER_BYTES: usize = 64 * 1024;

pub struct Connection {
    broker: Arc<Broker>,
    peer: SocketAddr,
    queued_kib: Arc<Semaphore>,
    metrics: RequestMetrics,
}

/// Why a connection ended early; logged once.
enum Close {
    Eof,
    Shutdown,
    Io(std::io::Error),
    Protocol(String),
    /// Nothing arrived for `connections.max.idle.ms`.
    Idle(std::time::Duration),
}

impl Connection {
    pub fn new(broker: Arc<Broker>, peer: SocketAddr, queued_kib: Arc<Semaphore>) -> Connection {
        Connection {
            broker,
            peer,
            queued_kib,
            metrics: RequestMetrics::default(),
        }
    }

    pub async fn run(mut self, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        metrics::gauge!("sluice_connections").increment(1.0);
        metrics::counter!("sluice_connections_accepted_total").increment(1);
        match self.serve(&mut stream).await {
            Close::Eof | Close::Shutdown => tracing::debug!(peer = %self.peer, "connection closed"),
            Close::Io(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "connection closed on I/O error")
            }
            Close::Idle(after) => {
                tracing::debug!(peer = %self.peer, ?after, "closing idle connection (connections.max.idle.ms)")
            }
            Close::Protocol(reason) => {
                metrics::counter!("sluice_connections_closed_on_bad_request_total").increment(1);
                tracing::warn!(peer = %self.peer, "closing connection: {reason}");
            }
        }
        metrics::gauge!("sluice_connections").decrement(1.0);
    }

    async fn serve(&mut self, stream: &mut TcpStream) -> Close {
        let max_frame = self.broker.config.max_request_bytes;
        let mut shutdown = self.broker.shutdown_signal();
        let mut input = BytesMut::with_capacity(READ_BUFFER_BYTES);
        let mut output = Output::default();
        loop {
            // Hold memory permits for the next frame before its body is buffered.
            let permit = loop {
                match peek_length(&input, max_frame) {
                    Err(e) => return Close::Protocol(e.to_string()),
                    Ok(Some(len)) => {
                        let permit = match self.reserve(len).await {
                            Some(p) => p,
                            None => return Close::Shutdown,
                        };
                        let need = LENGTH_PREFIX_BYTES + len;
                        if input.capacity() < need {
                            input.reserve(need - input.len());
                        }
                        break permit;
                    }
                    Ok(None) => {
                        if let Some(close) = self.read_more(stream, &mut input, &mut shutdown).await
                        {
                            return close;
                        }
                    }
                }
            };
            let frame = loop {
                match split_frame(&mut input, max_frame) {
                    Err(e) => return Close::Protocol(e.to_string()),
                    Ok(Some(frame)) => break frame,
                    Ok(None) => {
                        if let Some(close) = self.read_more(stream, &mut input, &mut shutdown).await
                        {
                            return close;
                        }
                    }
                }
            };
            if let Err(close) = self.handle(frame, &mut output, &mut shutdown).await {
                return close;
            }
            drop(permit);
            // More requests already buffered: answer them before writing, in one syscall.
            let next_is_buffered = matches!(peek_length(&input, max_frame), Ok(Some(len)) if input.len() >= LENGTH_PREFIX_BYTES + len);
            if !output.is_empty() && (!next_is_buffered || output.queued_bytes >= READ_BUFFER_BYTES)
            {
                if let Err(e) = output.write_to(stream).await {
                    return Close::Io(e);
                }
            }
            if *shutdown.borrow() && !next_is_buffered {
                return Close::Shutdown;
            }
        }
    }

    async fn reserve(&self, frame_len: usize) -> Option<OwnedSemaphorePermit> {
        // A frame larger than the whole budget takes all of it rather than waiting forever.
        let budget_kib = (self.broker.config.max_queued_request_bytes / 1024).max(1);
        let kib = frame_len.div_ceil(1024).clamp(1, budget_kib);
        let kib = u32::try_from(kib).unwrap_or(u32::MAX);
        self.queued_kib.clone().acquire_many_owned(kib).await.ok()
    }

    async fn read_more(
        &self,
        stream: &mut TcpStream,
        input: &mut BytesMut,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Option<Close> {
        if input.capacity() - input.len() < 4096 {
            input.reserve(READ_BUFFER_BYTES);
        }
        if *shutdown.borrow() && input.is_empty() {
            return Some(Close::Shutdown);
        }
        let idle = self.broker.config.connections_max_idle;
        tokio::select! {
            read = tokio::time::timeout(idle, stream.read_buf(input)) => match read {
                Err(_) => Some(Close::Idle(idle)),
                Ok(Ok(0)) if input.is_empty() => Some(Close::Eof),
                Ok(Ok(0)) => Some(Close::Protocol(format!("peer closed mid-frame ({} bytes buffered)", input.len()))),
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(Close::Io(e)),
            },
            _ = shutdown.changed(), if input.is_empty() => Some(Close::Shutdown),
        }
    }

    /// Decodes and handles one request, queueing its response (if any) on `output`.
    async fn handle(
        &mut self,
        frame: bytes::Bytes,
        output: &mut Output,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), Close> {
        let started = Instant::now();
        let (header, request) = match decode_request(frame) {
            Ok(decoded) => decoded,
            Err(e) => {
                let api = match &e {
                    DecodeError::UnsupportedVersion { api_key, .. }
                    | DecodeError::Malformed { api_key, .. } => {
                        format!("{api_key:?}")
                    }
                    _ => "unknown".into(),
                };
                metrics::counter!("sluice_request_errors_total", "api" => api, "error" => "INVALID_REQUEST").increment(1);
                return Err(Close::Protocol(e.to_string()));
            }
        };
        let api_name = api_name(header.api_key);
        let handling = handlers::handle(&self.broker, &header, self.peer, request);
        tokio::pin!(handling);
        let outcome = tokio::select! {
            outcome = &mut handling => outcome,
            _ = stopping(shutdown) => {
                // A request parked for data or a rebalance would hold the shutdown for its
                // whole wait: give it a moment to finish, then close without an answer.
                match tokio::time::timeout(SHUTDOWN_GRACE, &mut handling).await {
                    Ok(outcome) => outcome,
                    Err(_) => return Err(Close::Shutdown),
                }
            }
        };
        let (response, version) = match outcome {
            handlers::Outcome::Respond(response, version) => (response, version),
            handlers::Outcome::Silent => {
                self.metrics.record(header.api_key, started);
                return Ok(());
            }
            handlers::Outcome::Close(reason) => {
                self.metrics.record(header.api_key, started);
                return Err(Close::Protocol(reason));
            }
        };
        crate::metrics::count_response_errors(api_name, &response);
        if let Err(e) = output.push(header.correlation_id, version, &response) {
            tracing::error!(error = %e, "response encoding failed (a broker bug)");
            return Err(Close::Protocol(e.to_string()));
        }
        self.metrics.record(header.api_key, started);
        Ok(())
    }
}

/// This connection's request counter and duration histogram per API, looked up in the
/// recorder once per connection and API instead of once per request (the lookup hashes the
/// name and labels and takes the registry's lock: 1.8% of broker CPU in a profile of
/// 1-record produce requests).
#[derive(Default)]
struct RequestMetrics {
    by_api: Vec<(ApiKey, metrics::Counter, metrics::Histogram)>,
}

impl RequestMetrics {
    fn record(&mut self, key: ApiKey, started: Instant) {
        let i = match self.by_api.iter().position(|(k, _, _)| *k == key) {
            Some(i) => i,
            None => {
                let api = api_name(key);
                self.by_api.push((
                    key,
                    metrics::counter!("sluice_requests_total", "api" => api),
                    metrics::histogram!("sluice_request_duration_seconds", "api" => api),
                ));
                self.by_api.len() - 1
            }
        };
        let (_, requests, duration) = &self.by_api[i];
        requests.increment(1);
        duration.record(started.elapsed().as_secs_f64());
    }
}

/// A static label for each API (metrics labels must not allocate per request).
fn api_name(key: ApiKey) -> &'static str {
    sluice_protocol::versions::api_name(key)
}

/// Buffers in one vectored write at most (Linux allows 1024).
const MAX_IOVECS: usize = 64;

/// Responses waiting to be written, in request order. Fetch responses keep their record
/// sets as the log handed them out (no copy); the rest are encoded into a reused buffer.
#[derive(Default)]
struct Output {
    scratch: BytesMut,
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
}

impl Output {
    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn push(
        &mut self,
        correlation_id: i32,
        version: i16,
        response: &Response,
    ) -> Result<(), EncodeError> {
        if matches!(response, Response::Fetch(_)) {
            for b in encode_response_segments(correlation_id, version, response)? {
                self.queued_bytes += b.len();
                self.queue.push_back(b);
            }
        } else {
            encode_response(&mut self.scratch, correlation_id, version, response)?;
            let b = self.scratch.split().freeze();
            self.queued_bytes += b.len();
            self.queue.push_back(b);
        }
        Ok(())
    }

    async fn write_to(&mut self, stream: &mut TcpStream) -> std::io::Result<()> {
        while !self.queue.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .queue
                .iter()
                .take(MAX_IOVECS)
                .map(|b| IoSlice::new(b))
                .collect();
            let mut written = stream.write_vectored(&slices).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.queued_bytes -= written;
            while written > 0 {
                let Some(front) = self.queue.front_mut() else {
                    break;
                };
                if written >= front.len() {
                    written -= front.len();
                    self.queue.pop_front();
                } else {
                    front.advance(written);
                    written = 0;
                }
            }
        }
        Ok(())
    }
}
