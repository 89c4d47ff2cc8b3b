//! The leader-epoch checkpoint: for each leader epoch, the first offset written in it.
//! Same rules and file format as Kafka's `LeaderEpochFileCache` / `leader-epoch-checkpoint`
//! (version line, count line, then `epoch start_offset` lines).

use std::path::{Path, PathBuf};

use crate::checkpoint::write_atomic;
use crate::error::StorageError;

pub(crate) const EPOCH_FILE: &str = "leader-epoch-checkpoint";

pub(crate) struct EpochCache {
    path: PathBuf,
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    pub fn load(dir: &Path) -> Result<EpochCache, StorageError> {
        let path = dir.join(EPOCH_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        let bad = || {
            StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("malformed {}", path.display()),
            ))
        };
        let mut entries = Vec::new();
        if !text.is_empty() {
            let mut lines = text.lines();
            if lines.next() != Some("0") {
                return Err(bad());
            }
            let count: usize = lines
                .next()
                .and_then(|l| l.trim().parse().ok())
                .ok_or_else(bad)?;
            for _ in 0..count {
                let line = lines.next().ok_or_else(bad)?;
                let mut it = line.split_whitespace();
                let epoch: i32 = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
                let start: i64 = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
                if entries
                    .last()
                    .is_some_and(|&(e, s)| e >= epoch || s > start)
                {
                    return Err(bad());
                }
                entries.push((epoch, start));
            }
        }
        Ok(EpochCache { path, entries })
    }

    fn persist(&self) -> Result<(), StorageError> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for (e, s) in &self.entries {
            text.push_str(&format!("{e} {s}\n"));
        }
        write_atomic(&self.path, text.as_bytes())
    }

    pub fn latest_epoch(&self) -> i32 {
        self.entries.last().map_or(-1, |e| e.0)
    }

    /// Kafka's `assign`: a new (epoch, start offset) replaces entries it contradicts (equal or
    /// higher epoch, or equal or higher start offset).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<(), StorageError> {
        if epoch < 0 || start_offset < 0 {
            return Ok(());
        }
        if let Some(&(e, s)) = self.entries.last() {
            if e == epoch && s <= start_offset {
                return Ok(()); // already known; the first offset of an epoch never moves up
            }
        }
        let before = self.entries.len();
        self.entries.retain(|&(e, s)| e < epoch && s < start_offset);
        if before - self.entries.len() > 1 {
            tracing::warn!(
                epoch,
                start_offset,
                removed = before - self.entries.len(),
                "leader epoch entries removed by a non-monotonic assignment"
            );
        }
        self.entries.push((epoch, start_offset));
        self.persist()
    }

    /// Kafka's `endOffsetFor`: the largest epoch <= `epoch` and the start offset of the next
    /// higher epoch (or `log_end` for the latest epoch). None when unknown.
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> Option<(i32, i64)> {
        if epoch < 0 {
            return None;
        }
        let latest = self.entries.last()?;
        if latest.0 == epoch {
            return Some((epoch, log_end));
        }
        let higher_idx = self.entries.iter().position(|&(e, _)| e > epoch)?;
        let higher_start = self.entries[higher_idx].1;
        if higher_idx == 0 {
            return Some((epoch, higher_start));
        }
        Some((self.entries[higher_idx - 1].0, higher_start))
    }

    /// Removes entries starting at or after `end` (log truncated to `end`).
    pub fn truncate_from_end(&mut self, end: i64) -> Result<(), StorageError> {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s < end);
        if self.entries.len() != before {
            self.persist()?;
        }
        Ok(())
    }

    /// Log start moved to `start`: entries wholly below it go; the last of them is moved up
    /// to `start` (Kafka's `truncateFromStart`).
    pub fn truncate_from_start(&mut self, start: i64) -> Result<(), StorageError> {
        let below: Vec<usize> = (0..self.entries.len())
            .filter(|&i| self.entries[i].1 < start)
            .collect();
        let Some(&last_below) = below.last() else {
            return Ok(());
        };
        let epoch = self.entries[last_below].0;
        self.entries.drain(..=last_below);
        if self.entries.first().is_none_or(|&(_, s)| s > start) {
            self.entries.insert(0, (epoch, start));
        }
        self.persist()
    }

    pub fn clear(&mut self) -> Result<(), StorageError> {
        self.entries.clear();
        self.persist()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offset_for_follows_kafka() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EpochCache::load(dir.path()).unwrap();
        assert_eq!(c.end_offset_for(0, 10), None);
        c.assign(1, 0).unwrap();
        c.assign(3, 10).unwrap();
        c.assign(5, 20).unwrap();
        assert_eq!(c.latest_epoch(), 5);
        assert_eq!(c.end_offset_for(5, 30), Some((5, 30)));
        assert_eq!(c.end_offset_for(3, 30), Some((3, 20)));
        assert_eq!(c.end_offset_for(4, 30), Some((3, 20)));
        assert_eq!(c.end_offset_for(1, 30), Some((1, 10)));
        assert_eq!(c.end_offset_for(0, 30), Some((0, 0)));
        assert_eq!(c.end_offset_for(6, 30), None);
        assert_eq!(c.end_offset_for(-1, 30), None);
        let c2 = EpochCache::load(dir.path()).unwrap();
        assert_eq!(c2.entries, vec![(1, 0), (3, 10), (5, 20)]);
    }

    #[test]
    fn assign_and_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EpochCache::load(dir.path()).unwrap();
        c.assign(1, 0).unwrap();
        c.assign(1, 5).unwrap(); // same epoch later offset: no change
        c.assign(2, 10).unwrap();
        c.assign(3, 10).unwrap(); // same start, newer epoch replaces
        assert_eq!(c.entries, vec![(1, 0), (3, 10)]);
        c.truncate_from_end(10).unwrap();
        assert_eq!(c.entries, vec![(1, 0)]);
        c.assign(4, 20).unwrap();
        c.truncate_from_start(25).unwrap();
        assert_eq!(c.entries, vec![(4, 25)]);
        c.assign(6, 30).unwrap();
        c.truncate_from_start(28).unwrap();
        assert_eq!(c.entries, vec![(4, 28), (6, 30)]);
    }
}
