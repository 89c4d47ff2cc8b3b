//! Durable Raft log and vote storage.
//!
//! The log is an append-only journal (`log.journal`) of operations: append entries, truncate
//! from an index, purge up to a log id. Each operation is one frame:
//! `[len: u32 LE][crc32c(payload): u32 LE][payload: JSON]`. Every operation is fsynced
//! before openraft is told it is done (the `RaftLogStorage` contract: an acknowledged append
//! survives a crash). Recovery replays the journal and cuts a torn or corrupt tail, which
//! was never acknowledged. All live entries are also held in memory: the metadata log is
//! small and purged after each snapshot. When most of the journal is dead (purged or
//! truncated entries) it is rewritten atomically.
//!
//! The vote lives in `vote.json`, replaced atomically (write, fsync, rename, fsync dir).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError};
use serde::{Deserialize, Serialize};

use crate::storage_util::{lock, sync_dir, write_atomically};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const JOURNAL_FILE: &str = "log.journal";
const VOTE_FILE: &str = "vote.json";
/// A frame bigger than this is corruption, not an entry (entries are metadata batches).
const MAX_FRAME_BYTES: usize = 64 << 20;
/// Rewrite the journal when it holds this many more frames than live entries.
const COMPACT_SLACK_FRAMES: u64 = 4096;

#[derive(Serialize, Deserialize)]
enum JournalOp {
    Append(Entry),
    Truncate { since: u64 },
    Purge { upto: LogId },
}

struct LogInner {
    dir: PathBuf,
    journal: File,
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    journal_frames: u64,
}

/// The on-disk Raft log. Cheap to clone; clones (log readers) share it.
#[derive(Clone)]
pub(crate) struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, replaying the journal and cutting a torn tail.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(JOURNAL_FILE);
        let existed = path.exists();
        let mut journal = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        if !existed {
            // A new log: make the file and the directories leading to it durable.
            journal.sync_all()?;
            sync_dir(dir)?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut bytes = Vec::new();
        journal.read_to_end(&mut bytes)?;
        let mut inner = LogInner {
            dir: dir.to_path_buf(),
            journal,
            entries: BTreeMap::new(),
            last_purged: None,
            vote: None,
            journal_frames: 0,
        };
        let mut pos = 0usize;
        while let Some((op, len)) = decode_frame(&bytes[pos..]) {
            inner.replay(op);
            inner.journal_frames += 1;
            pos += len;
        }
        if pos < bytes.len() {
            tracing::warn!(path = %path.display(), valid_bytes = pos, file_bytes = bytes.len(), "cutting torn tail of the metadata log");
            inner.journal.set_len(pos as u64)?;
            inner.journal.sync_all()?;
        }
        inner.journal.seek(SeekFrom::End(0))?;
        inner.vote = match std::fs::read(dir.join(VOTE_FILE)) {
            Ok(b) => Some(serde_json::from_slice(&b).map_err(io::Error::other)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// The index of the last entry in the log (0 if empty).
    pub fn last_index(&self) -> u64 {
        let g = lock(&self.inner);
        g.entries
            .keys()
            .next_back()
            .copied()
            .or(g.last_purged.map(|l| l.index))
            .unwrap_or(0)
    }

    /// Runs blocking file I/O off the async runtime's worker threads.
    async fn blocking<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut LogInner) -> io::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        crate::rt::run_blocking(move || f(&mut lock(&inner))).await
    }
}

impl LogInner {
    fn replay(&mut self, op: JournalOp) {
        match op {
            JournalOp::Append(entry) => {
                self.entries.insert(entry.log_id.index, entry);
            }
            JournalOp::Truncate { since } => {
                self.entries.split_off(&since);
            }
            JournalOp::Purge { upto } => self.purge_in_memory(upto),
        }
    }

    fn purge_in_memory(&mut self, upto: LogId) {
        self.entries = self.entries.split_off(&(upto.index + 1));
        if self.last_purged.is_none_or(|p| p.index < upto.index) {
            self.last_purged = Some(upto);
        }
    }

    /// Appends frames and fsyncs them (data only: the file length is part of the data).
    fn write_ops(&mut self, ops: &[JournalOp]) -> io::Result<()> {
        let mut buf = Vec::new();
        for op in ops {
            encode_frame(op, &mut buf)?;
        }
        self.journal.write_all(&buf)?;
        self.journal.sync_data()?;
        self.journal_frames += ops.len() as u64;
        Ok(())
    }

    /// Rewrites the journal with only the live state when it is mostly dead frames.
    fn maybe_compact(&mut self) -> io::Result<()> {
        if self.journal_frames < self.entries.len() as u64 + COMPACT_SLACK_FRAMES {
            return Ok(());
        }
        let mut buf = Vec::new();
        if let Some(upto) = self.last_purged {
            encode_frame(&JournalOp::Purge { upto }, &mut buf)?;
        }
        for entry in self.entries.values() {
            encode_frame(&JournalOp::Append(entry.clone()), &mut buf)?;
        }
        write_atomically(&self.dir, JOURNAL_FILE, &buf)?;
        let mut journal = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(JOURNAL_FILE))?;
        journal.seek(SeekFrom::End(0))?;
        self.journal = journal;
        self.journal_frames = self.entries.len() as u64 + u64::from(self.last_purged.is_some());
        Ok(())
    }
}

fn encode_frame(op: &JournalOp, buf: &mut Vec<u8>) -> io::Result<()> {
    let payload = serde_json::to_vec(op).map_err(io::Error::other)?;
    let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
    Ok(())
}

/// Decodes one frame; `None` at the end or at a torn / corrupt frame.
fn decode_frame(bytes: &[u8]) -> Option<(JournalOp, usize)> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    if len > MAX_FRAME_BYTES {
        return None;
    }
    let payload = bytes.get(8..8 + len)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let op = serde_json::from_slice(payload).ok()?;
    Some((op, 8 + len))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let g = lock(&self.inner);
        Ok(g.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let g = lock(&self.inner);
        let last = g
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(g.last_purged);
        Ok(LogState {
            last_purged_log_id: g.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.blocking(move |g| {
            let bytes = serde_json::to_vec(&vote).map_err(io::Error::other)?;
            write_atomically(&g.dir, VOTE_FILE, &bytes)?;
            g.vote = Some(vote);
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(lock(&self.inner).vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let ops: Vec<JournalOp> = entries.into_iter().map(JournalOp::Append).collect();
        let res = self
            .blocking(move |g| {
                g.write_ops(&ops)?;
                for op in ops {
                    g.replay(op);
                }
                Ok(())
            })
            .await;
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e).into();
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |g| {
            let op = JournalOp::Truncate {
                since: log_id.index,
            };
            g.write_ops(std::slice::from_ref(&op))?;
            g.replay(op);
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |g| {
            let op = JournalOp::Purge { upto: log_id };
            g.write_ops(std::slice::from_ref(&op))?;
            g.replay(op);
            g.maybe_compact()
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_cut_on_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(dir.path()).unwrap();
        {
            let mut g = lock(&log.inner);
            let entry = Entry {
                log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 0), 1),
                payload: openraft::EntryPayload::Blank,
            };
            g.write_ops(&[JournalOp::Append(entry)]).unwrap();
            // A torn second frame: a length but not the bytes.
            g.journal.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        }
        drop(log);
        let log = LogStore::open(dir.path()).unwrap();
        assert_eq!(log.last_index(), 1);
        let len = std::fs::metadata(dir.path().join(JOURNAL_FILE))
            .unwrap()
            .len();
        let log2 = LogStore::open(dir.path()).unwrap();
        assert_eq!(log2.last_index(), 1);
        assert_eq!(
            std::fs::metadata(dir.path().join(JOURNAL_FILE))
                .unwrap()
                .len(),
            len
        );
    }
}
