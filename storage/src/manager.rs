//! [`LogManager`]: every log under one data directory (`<data_dir>/<topic>-<partition>/`),
//! a shared cap on open segment files, and background threads: one for flush-by-interval,
//! `segment.ms` rolls, retention and compaction, one for the page-cache budget.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::LogConfig;
use crate::error::StorageError;
use crate::log::{now_ms, Log};
use crate::page_cache::{self, PageCacheBudget};
use crate::segment::{lock, read, write, HandleCache};

/// Knobs of a [`LogManager`] beyond the per-log configs.
#[derive(Debug, Clone)]
pub struct LogManagerOptions {
    /// Old segments whose files may be open at once over all logs (active ones not counted).
    pub max_open_segments: usize,
    /// How often the background thread checks `flush.ms`.
    pub flush_check_interval: Duration,
    /// How often it runs [`Log::maintain`] (Kafka's `log.retention.check.interval.ms`).
    pub maintenance_interval: Duration,
    /// The page-cache budget over all logs (`log.page.cache.max.bytes`, [`PageCacheBudget`],
    /// applied from a thread of its own). `None` keeps everything, as Kafka does.
    pub page_cache_max_bytes: Option<u64>,
}

impl Default for LogManagerOptions {
    fn default() -> Self {
        LogManagerOptions {
            max_open_segments: 1024,
            flush_check_interval: Duration::from_millis(100),
            maintenance_interval: Duration::from_secs(30),
            page_cache_max_bytes: Some(DEFAULT_PAGE_CACHE_MAX_BYTES),
        }
    }
}

/// Default of [`LogManagerOptions::page_cache_max_bytes`]: the last GiB written stays in
/// memory for consumers.
pub const DEFAULT_PAGE_CACHE_MAX_BYTES: u64 = 1 << 30;

type Logs = RwLock<HashMap<(String, i32), Arc<Log>>>;

struct Background {
    stop: Arc<(Mutex<bool>, Condvar)>,
    threads: Vec<JoinHandle<()>>,
}

/// All logs under one data directory, with bounded open files and background threads for
/// flush-by-interval, retention and compaction, and for the page-cache budget.
pub struct LogManager {
    data_dir: PathBuf,
    options: LogManagerOptions,
    logs: Arc<Logs>,
    cache: Arc<HandleCache>,
    background: Mutex<Option<Background>>,
    closed: AtomicBool,
}

/// Splits a directory name `<topic>-<partition>` at the last '-'.
pub(crate) fn parse_log_dir_name(name: &str) -> Option<(String, i32)> {
    let (topic, part) = name.rsplit_once('-')?;
    if topic.is_empty() || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((topic.to_string(), part.parse().ok()?))
}

fn check_name(topic: &str, partition: i32) -> Result<(), StorageError> {
    let ok = !topic.is_empty()
        && topic != "."
        && topic != ".."
        && topic.len() <= 249
        && !topic.contains(['/', '\\', '\0'])
        && partition >= 0;
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidRecord(format!(
            "invalid log name {topic:?}-{partition}"
        )))
    }
}

impl LogManager {
    /// `data_dir/<topic>-<partition>/` per log, as Kafka lays it out.
    pub fn new(data_dir: PathBuf) -> Result<LogManager, StorageError> {
        LogManager::with_options(data_dir, LogManagerOptions::default())
    }

    pub fn with_options(
        data_dir: PathBuf,
        options: LogManagerOptions,
    ) -> Result<LogManager, StorageError> {
        std::fs::create_dir_all(&data_dir)?;
        Ok(LogManager {
            data_dir,
            cache: HandleCache::new(options.max_open_segments),
            options,
            logs: Arc::new(RwLock::new(HashMap::new())),
            background: Mutex::new(None),
            closed: AtomicBool::new(false),
        })
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Opens or creates the log named `<topic>-<partition>`. An already open log is returned
    /// as is, with `config` applied.
    pub fn open_log(
        &self,
        topic: &str,
        partition: i32,
        config: LogConfig,
    ) -> Result<Arc<Log>, StorageError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        check_name(topic, partition)?;
        let key = (topic.to_string(), partition);
        if let Some(log) = read(&self.logs).get(&key).filter(|l| !l.is_closed()) {
            log.update_config(config);
            return Ok(log.clone());
        }
        let mut logs = write(&self.logs);
        if let Some(log) = logs.get(&key) {
            if !log.is_closed() {
                log.update_config(config);
                return Ok(log.clone());
            }
            // Closed by its owner: open it again from disk.
            logs.remove(&key);
        }
        let dir = self.data_dir.join(format!("{topic}-{partition}"));
        let log = Arc::new(Log::open_with_cache(dir, config, self.cache.clone())?);
        logs.insert(key, log.clone());
        Ok(log)
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Log>> {
        read(&self.logs)
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Every open log.
    pub fn logs(&self) -> Vec<((String, i32), Arc<Log>)> {
        read(&self.logs)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Closes the log and removes its directory (topic deletion).
    pub fn delete_log(&self, topic: &str, partition: i32) -> Result<(), StorageError> {
        check_name(topic, partition)?;
        let removed = write(&self.logs).remove(&(topic.to_string(), partition));
        match removed {
            Some(log) => log.close_and_delete(),
            None => {
                match std::fs::remove_dir_all(self.data_dir.join(format!("{topic}-{partition}"))) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// `(topic, partition)` of every log directory present on disk (opened or not).
    pub fn logs_on_disk(&self) -> Result<Vec<(String, i32)>, StorageError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.data_dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            if let Some(parsed) = entry.file_name().to_str().and_then(parse_log_dir_name) {
                out.push(parsed);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Starts the background maintenance thread (flush interval, retention, compaction).
    /// Calling it again does nothing.
    pub fn start_background(&self) {
        let mut bg = lock(&self.background);
        if bg.is_some() || self.closed.load(Ordering::Acquire) {
            return;
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let logs = self.logs.clone();
        let opts = self.options.clone();
        let mut threads = Vec::new();
        let stop2 = stop.clone();
        let logs2 = logs.clone();
        let budget = opts.page_cache_max_bytes;
        let spawned = std::thread::Builder::new()
            .name("sluice-log-maintenance".into())
            .spawn(move || background_loop(logs2, opts, stop2));
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => tracing::error!(error = %e, "could not start the log maintenance thread"),
        }
        // Its own thread: a pass waits for writeback, which must not hold up flush.ms.
        if let Some(max_bytes) = budget {
            let stop2 = stop.clone();
            let spawned = std::thread::Builder::new()
                .name("sluice-page-cache".into())
                .spawn(move || page_cache_loop(logs, PageCacheBudget::new(max_bytes), stop2));
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => tracing::error!(error = %e, "could not start the page-cache thread"),
            }
        }
        *bg = Some(Background { stop, threads });
    }

    fn stop_background(&self) {
        let bg = lock(&self.background).take();
        if let Some(bg) = bg {
            *lock(&bg.stop.0) = true;
            bg.stop.1.notify_all();
            for thread in bg.threads {
                if thread.join().is_err() {
                    tracing::error!("a log background thread panicked");
                }
            }
        }
    }

    /// Stops background work and closes every open log cleanly.
    pub fn close_all(&self) -> Result<(), StorageError> {
        self.closed.store(true, Ordering::Release);
        self.stop_background();
        let logs: Vec<Arc<Log>> = write(&self.logs).drain().map(|(_, l)| l).collect();
        let mut first_err = None;
        for log in logs {
            match log.close() {
                Ok(()) | Err(StorageError::Closed) => {}
                Err(e) => {
                    tracing::error!(dir = %log.dir().display(), error = %e, "closing log failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for LogManager {
    fn drop(&mut self) {
        self.stop_background();
    }
}

fn background_loop(logs: Arc<Logs>, opts: LogManagerOptions, stop: Arc<(Mutex<bool>, Condvar)>) {
    let mut last_maintenance = Instant::now();
    loop {
        if wait_or_stop(&stop, opts.flush_check_interval) {
            return;
        }
        let snapshot: Vec<Arc<Log>> = read(&logs).values().cloned().collect();
        let now = now_ms();
        let maintain = last_maintenance.elapsed() >= opts.maintenance_interval;
        for log in snapshot {
            if *lock(&stop.0) {
                return;
            }
            let result = if maintain {
                log.maintain(now)
            } else {
                log.flush_if_due(now)
            };
            match result {
                Ok(()) | Err(StorageError::Closed) => {}
                Err(e) => {
                    tracing::warn!(dir = %log.dir().display(), error = %e, "log maintenance failed")
                }
            }
        }
        if maintain {
            last_maintenance = Instant::now();
        }
    }
}

/// Sleeps `interval` unless stopped; true when stopped.
fn wait_or_stop(stop: &(Mutex<bool>, Condvar), interval: Duration) -> bool {
    let stopped = lock(&stop.0);
    let (stopped, _) = stop
        .1
        .wait_timeout_while(stopped, interval, |s| !*s)
        .unwrap_or_else(|p| p.into_inner());
    *stopped
}

/// The page-cache budget's pass over every log, every [`page_cache::INTERVAL`] while logs
/// grow, every [`page_cache::IDLE_INTERVAL`] when none did.
fn page_cache_loop(
    logs: Arc<Logs>,
    mut budget: PageCacheBudget,
    stop: Arc<(Mutex<bool>, Condvar)>,
) {
    let mut interval = page_cache::INTERVAL;
    while !wait_or_stop(&stop, interval) {
        let snapshot: Vec<Arc<Log>> = read(&logs).values().cloned().collect();
        interval = if budget.pass(&snapshot) {
            page_cache::INTERVAL
        } else {
            page_cache::IDLE_INTERVAL
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names() {
        assert_eq!(parse_log_dir_name("orders-3"), Some(("orders".into(), 3)));
        assert_eq!(
            parse_log_dir_name("my-topic-12"),
            Some(("my-topic".into(), 12))
        );
        assert_eq!(
            parse_log_dir_name("__consumer_offsets-49"),
            Some(("__consumer_offsets".into(), 49))
        );
        assert_eq!(parse_log_dir_name("metadata"), None);
        assert_eq!(parse_log_dir_name("-1"), None);
        assert_eq!(parse_log_dir_name("t-"), None);
        assert_eq!(parse_log_dir_name("t-1.abc-delete"), None);
        assert_eq!(parse_log_dir_name("t--1"), Some(("t-".into(), 1)));
    }
}
