//! Log compaction (placeholder until implemented).

use crate::config::LogConfig;
use crate::error::StorageError;
use crate::log::Log;

#[derive(Debug, Default)]
pub(crate) struct CleanerState {
    pub first_dirty: i64,
}

impl CleanerState {
    pub fn clamp(&mut self, end: i64) {
        self.first_dirty = self.first_dirty.min(end);
    }
}

impl Log {
    pub(crate) fn compact(&self, _now_ms: i64, _cfg: &LogConfig) -> Result<(), StorageError> {
        Ok(())
    }
}
