//! Producer-state snapshots: opaque bytes (the broker's idempotent-producer state) stored at
//! an offset as `<20-digit offset>.snapshot`, with a CRC-32C so a torn file is skipped.
//! The newest few are kept.

use std::path::{Path, PathBuf};

use crate::checkpoint::write_atomic;
use crate::error::StorageError;

const SUFFIX: &str = "snapshot";
const MAGIC: &[u8; 4] = b"SLPS";
/// Snapshots kept; older ones are deleted when a new one is saved.
const KEEP: usize = 3;

fn path_for(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.{SUFFIX}"))
}

/// Offsets of the snapshots on disk, ascending.
pub(crate) fn list(dir: &Path) -> Result<Vec<i64>, StorageError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".snapshot") {
            if stem.len() == 20 {
                if let Ok(o) = stem.parse::<i64>() {
                    out.push(o);
                }
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

pub(crate) fn save(dir: &Path, offset: i64, data: &[u8]) -> Result<(), StorageError> {
    let mut buf = Vec::with_capacity(data.len() + 16);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&offset.to_be_bytes());
    buf.extend_from_slice(&crc32c::crc32c(data).to_be_bytes());
    buf.extend_from_slice(data);
    write_atomic(&path_for(dir, offset), &buf)?;
    let all = list(dir)?;
    if all.len() > KEEP {
        for &o in &all[..all.len() - KEEP] {
            remove(dir, o)?;
        }
    }
    Ok(())
}

fn remove(dir: &Path, offset: i64) -> Result<(), StorageError> {
    match std::fs::remove_file(path_for(dir, offset)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes snapshots above `log_end` (the log was truncated below them).
pub(crate) fn remove_above(dir: &Path, log_end: i64) -> Result<(), StorageError> {
    for o in list(dir)? {
        if o > log_end {
            remove(dir, o)?;
        }
    }
    Ok(())
}

/// The newest valid snapshot at or below `log_end`.
pub(crate) fn load(dir: &Path, log_end: i64) -> Result<Option<(i64, Vec<u8>)>, StorageError> {
    for o in list(dir)?.into_iter().rev() {
        if o > log_end {
            continue;
        }
        let buf = match std::fs::read(path_for(dir, o)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        if buf.len() >= 16 && &buf[..4] == MAGIC && buf[4..12] == o.to_be_bytes() {
            let crc = u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]);
            if crc32c::crc32c(&buf[16..]) == crc {
                return Ok(Some((o, buf[16..].to_vec())));
            }
        }
        tracing::warn!(offset = o, dir = %dir.display(), "skipping corrupt producer snapshot");
    }
    Ok(None)
}
