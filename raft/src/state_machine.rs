//! The metadata state machine as openraft sees it: applies committed entries to
//! [`MetadataState`], publishes a new [`MetadataImage`] after each applied batch, and builds,
//! persists and installs snapshots of the whole state.
//!
//! The state lives in memory; durability comes from the Raft log plus the latest snapshot
//! file (`snapshot.json`, replaced atomically: write, fsync, rename, fsync the directory).

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, Snapshot, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::state::MetadataState;
use crate::storage_util::{lock, write_atomically};
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::MetadataImage;

const SNAPSHOT_FILE: &str = "snapshot.json";

/// Holds the newest image and tells watchers. The controller id is not replicated state (it
/// is whoever leads now), so it is merged in here.
pub(crate) struct ImagePublisher {
    inner: Mutex<(Arc<MetadataImage>, Option<i32>)>,
    tx: watch::Sender<Arc<MetadataImage>>,
}

impl ImagePublisher {
    pub fn new() -> Arc<Self> {
        let image = Arc::new(MetadataImage::default());
        let (tx, _rx) = watch::channel(image.clone());
        Arc::new(ImagePublisher {
            inner: Mutex::new((image, None)),
            tx,
        })
    }

    pub fn current(&self) -> Arc<MetadataImage> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.tx.subscribe()
    }

    pub fn publish_state(&self, mut image: MetadataImage) {
        let mut g = lock(&self.inner);
        image.controller_id = g.1;
        let image = Arc::new(image);
        g.0 = image.clone();
        self.tx.send_replace(image);
    }

    pub fn set_controller(&self, controller_id: Option<i32>) {
        let mut g = lock(&self.inner);
        if g.1 == controller_id {
            return;
        }
        g.1 = controller_id;
        let mut image = (*g.0).clone();
        image.controller_id = controller_id;
        let image = Arc::new(image);
        g.0 = image.clone();
        self.tx.send_replace(image);
    }
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    /// The serialized [`MetadataState`] (the snapshot data openraft transfers).
    data: Vec<u8>,
}

struct SmInner {
    state: Arc<MetadataState>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    current_snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    snapshots_built: u64,
}

/// openraft's state machine for metadata. Cheap to clone; clones share the state.
#[derive(Clone)]
pub(crate) struct StateMachineStore {
    inner: Arc<Mutex<SmInner>>,
    dir: PathBuf,
    publisher: Arc<ImagePublisher>,
}

impl StateMachineStore {
    /// Opens the state machine in `dir`, loading the latest snapshot if there is one.
    pub fn open(dir: &Path, publisher: Arc<ImagePublisher>) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut inner = SmInner {
            state: Arc::new(MetadataState::default()),
            last_applied: None,
            last_membership: StoredMembership::default(),
            current_snapshot: None,
            snapshots_built: 0,
        };
        let path = dir.join(SNAPSHOT_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: SnapshotFile =
                    serde_json::from_slice(&bytes).map_err(io::Error::other)?;
                let state: MetadataState =
                    serde_json::from_slice(&file.data).map_err(io::Error::other)?;
                inner.state = Arc::new(state);
                inner.last_applied = file.meta.last_log_id;
                inner.last_membership = file.meta.last_membership.clone();
                inner.current_snapshot = Some((file.meta, file.data));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let offset = inner.last_applied.map(|l| l.index).unwrap_or(0);
        publisher.publish_state(inner.state.to_image(offset));
        Ok(StateMachineStore {
            inner: Arc::new(Mutex::new(inner)),
            dir: dir.to_path_buf(),
            publisher,
        })
    }

    /// The committed state as of the last applied entry.
    pub fn state(&self) -> Arc<MetadataState> {
        lock(&self.inner).state.clone()
    }

    fn persist_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let file = SnapshotFile {
            meta: meta.clone(),
            data: data.to_vec(),
        };
        let bytes = serde_json::to_vec(&file).map_err(io::Error::other)?;
        write_atomically(&self.dir, SNAPSHOT_FILE, &bytes)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (state, last_applied, last_membership, n) = {
            let mut g = lock(&self.inner);
            g.snapshots_built += 1;
            (
                g.state.clone(),
                g.last_applied,
                g.last_membership.clone(),
                g.snapshots_built,
            )
        };
        let data =
            serde_json::to_vec(&*state).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, n),
            None => format!("--{n}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        self.persist_snapshot(&meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        lock(&self.inner).current_snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let g = lock(&self.inner);
        Ok((g.last_applied, g.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut replies = Vec::new();
        let image = {
            let mut g = lock(&self.inner);
            for entry in entries {
                g.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(batch) => {
                        if let Err(reason) =
                            Arc::make_mut(&mut g.state).apply_batch(&batch, entry.log_id.index)
                        {
                            // Not fatal: every node rejects the same batch the same way.
                            tracing::error!(index = entry.log_id.index, %reason, "metadata batch rejected");
                        }
                    }
                    EntryPayload::Membership(m) => {
                        g.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    }
                }
                replies.push(());
            }
            let offset = g.last_applied.map(|l| l.index).unwrap_or(0);
            g.state.to_image(offset)
        };
        self.publisher.publish_state(image);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: MetadataState = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.persist_snapshot(meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let image = {
            let mut g = lock(&self.inner);
            g.state = Arc::new(state);
            g.last_applied = meta.last_log_id;
            g.last_membership = meta.last_membership.clone();
            g.current_snapshot = Some((meta.clone(), data));
            g.state
                .to_image(meta.last_log_id.map(|l| l.index).unwrap_or(0))
        };
        self.publisher.publish_state(image);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let g = lock(&self.inner);
        Ok(g.current_snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}
