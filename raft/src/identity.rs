//! Node identity: `<data_dir>/metadata/meta.properties` holds this node's id and the cluster
//! id, written on first start (Kafka keeps the same file). A node id in the file that differs
//! from the configured one is refused: one data dir belongs to one node.

use std::io;
use std::path::Path;

use crate::storage_util::write_atomically;

pub(crate) const IDENTITY_FILE: &str = "meta.properties";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub node_id: i32,
    /// Empty until known: a voter that joins an existing cluster learns it from the log.
    pub cluster_id: String,
}

/// Kafka's cluster id format: a random UUID as 22 characters of unpadded base64url.
pub(crate) fn new_cluster_id() -> String {
    base64url(crate::rt::random_uuid().as_bytes())
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Reads the identity file; `Ok(None)` if there is none yet.
pub(crate) fn load(dir: &Path) -> io::Result<Option<Identity>> {
    let text = match std::fs::read_to_string(dir.join(IDENTITY_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut node_id = None;
    let mut cluster_id = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "node.id" => node_id = v.trim().parse::<i32>().ok(),
                "cluster.id" => cluster_id = v.trim().to_string(),
                _ => {}
            }
        }
    }
    let node_id = node_id.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "meta.properties has no valid node.id",
        )
    })?;
    Ok(Some(Identity {
        node_id,
        cluster_id,
    }))
}

pub(crate) fn store(dir: &Path, identity: &Identity) -> io::Result<()> {
    let text = format!(
        "# Sluice metadata identity; do not edit.\nversion=1\nnode.id={}\ncluster.id={}\n",
        identity.node_id, identity.cluster_id
    );
    write_atomically(dir, IDENTITY_FILE, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_id_is_22_chars_of_base64url() {
        let id = new_cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn identity_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let id = Identity {
            node_id: 7,
            cluster_id: new_cluster_id(),
        };
        store(dir.path(), &id).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(id));
    }
}
