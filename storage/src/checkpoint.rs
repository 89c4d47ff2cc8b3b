//! Small checkpoint files written atomically (temp file, fsync, rename, fsync of the
//! directory): the log's recovery point and log start offset, and the clean-shutdown marker.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::StorageError;

pub(crate) const OFFSETS_FILE: &str = "log-offsets-checkpoint";
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

/// Writes `data` to `path` so that a crash leaves either the old or the new content.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StorageError> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Recovery point (everything below is known flushed), log start offset, and the
/// compaction progress (offsets below `first_dirty` were compacted at least once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogOffsets {
    pub recovery_point: i64,
    pub log_start: i64,
    pub first_dirty: i64,
}

pub(crate) fn read_offsets(dir: &Path) -> Result<Option<LogOffsets>, StorageError> {
    let text = match std::fs::read_to_string(dir.join(OFFSETS_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut lines = text.lines();
    let bad = || {
        StorageError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("malformed {OFFSETS_FILE} in {}", dir.display()),
        ))
    };
    if lines.next() != Some("0") {
        return Err(bad());
    }
    let mut nums = lines
        .next()
        .ok_or_else(bad)?
        .split_whitespace()
        .map(|s| s.parse::<i64>());
    let recovery_point = nums.next().ok_or_else(bad)?.map_err(|_| bad())?;
    let log_start = nums.next().ok_or_else(bad)?.map_err(|_| bad())?;
    // Optional: older files had two numbers.
    let first_dirty = nums.next().transpose().map_err(|_| bad())?.unwrap_or(0);
    Ok(Some(LogOffsets {
        recovery_point,
        log_start,
        first_dirty,
    }))
}

pub(crate) fn write_offsets(dir: &Path, o: LogOffsets) -> Result<(), StorageError> {
    write_atomic(
        &dir.join(OFFSETS_FILE),
        format!(
            "0\n{} {} {}\n",
            o.recovery_point, o.log_start, o.first_dirty
        )
        .as_bytes(),
    )
}
