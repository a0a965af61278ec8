//! Envelope encryption: a master key (a file with mode 0600, or given by the
//! environment) wraps the data keys kept in the metadata store. Rotating the
//! master key re-wraps data keys, never data.
//!
//! Rotation ([`rotate`]) is crash-safe in three steps: the new key is
//! written beside the old one (`master.key.next`, fsynced); every data key
//! is re-wrapped under it in one transaction; the new key file replaces
//! the old (rename, fsynced). A crash before the transaction leaves the old
//! key in force (the stale next file is replaced by the next rotation); a
//! crash after it leaves the data keys under the key in the next file, and
//! opening the store ([`open_ring`]) or running the rotation again finishes
//! the rename. The old key opens nothing once the transaction committed.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use rand::RngCore;

use super::aead;

use crate::meta::{Meta, MetaError};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("master key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("master key {0} is not 64 hex digits")]
    BadMasterKey(String),
    #[error("master key file {0} is readable by others: run `chmod 600 {0}`")]
    Permissions(String),
    #[error("a data key in the database cannot be unwrapped: wrong master key?")]
    Unwrap,
    #[error(transparent)]
    Seal(#[from] aead::SealError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

pub struct MasterKey([u8; 32]);

const WRAP_NONCE: usize = 12;

impl MasterKey {
    pub fn from_hex(s: &str, origin: &str) -> Result<Self, KeyError> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut key)
            .map_err(|_| KeyError::BadMasterKey(origin.to_owned()))?;
        Ok(Self(key))
    }

    /// Reads the key file; a missing one is an error (tools that open an
    /// existing installation must not make a key nothing was sealed with).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        if !path.exists() {
            return Err(KeyError::Io {
                path: path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no master key here: give the server's data folder (--data-dir), its \
                     configuration (--config) or the key (TESSERA_MASTER_KEY)",
                ),
            });
        }
        Self::load_or_create(path)
    }

    /// Reads the key file, or creates it (mode 0600, fsynced) on first start.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
                    if mode & 0o077 != 0 {
                        return Err(KeyError::Permissions(path.display().to_string()));
                    }
                }
                Self::from_hex(&text, &path.display().to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                write_private(path, hex::encode(key).as_bytes()).map_err(io)?;
                Ok(Self(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    fn wrap(&self, data_key: &[u8; 32]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; WRAP_NONCE];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        out.extend_from_slice(data_key);
        aead::seal_tail(&self.0, nonce, &[], &mut out, WRAP_NONCE)?;
        Ok(out)
    }

    fn unwrap_key(&self, wrapped: &[u8]) -> Result<[u8; 32], KeyError> {
        let (nonce, ct) = wrapped
            .split_at_checked(WRAP_NONCE)
            .ok_or(KeyError::Unwrap)?;
        let nonce: [u8; WRAP_NONCE] = nonce.try_into().map_err(|_| KeyError::Unwrap)?;
        let plain = aead::open(&self.0, nonce, &[], ct).ok_or(KeyError::Unwrap)?;
        plain.try_into().map_err(|_| KeyError::Unwrap)
    }
}

/// Where a rotation keeps the new key until the data keys are under it.
pub fn next_key_path(path: &Path) -> std::path::PathBuf {
    let mut next = path.as_os_str().to_owned();
    next.push(".next");
    std::path::PathBuf::from(next)
}

/// Unwraps the data keys with the key file at `path`, or creates the key
/// (and the first data key) on a new installation. A rotation cut short
/// after its transaction is finished here: the data keys open with the
/// next key, which then replaces the old one.
pub async fn open_ring(meta: &Meta, path: &Path, create: bool) -> Result<KeyRing, KeyError> {
    let master = if create {
        MasterKey::load_or_create(path)?
    } else {
        MasterKey::load(path)?
    };
    match KeyRing::load(meta, &master).await {
        Err(KeyError::Unwrap) if next_key_path(path).exists() => {
            let next = MasterKey::load(&next_key_path(path))?;
            let ring = KeyRing::load(meta, &next).await?;
            finish_rename(path)?;
            tracing::warn!(key = %path.display(), "finished a master-key rotation that was cut short");
            Ok(ring)
        }
        other => other,
    }
}

fn finish_rename(path: &Path) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::rename(next_key_path(path), path).map_err(io)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// Where a rotation got to; tests cut it short at each of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationStep {
    /// The new key is in the next file; nothing else changed.
    NextWritten,
    /// The data keys are under the new key; the old file is still there.
    Rewrapped,
}

/// Replaces the master key in the file at `path` with a new random one,
/// re-wrapping every data key; `at` is told each step as it completes.
/// Returns how many data keys were re-wrapped.
pub async fn rotate(
    meta: &Meta,
    path: &Path,
    mut at: impl FnMut(RotationStep),
) -> Result<usize, KeyError> {
    // One rotation at a time: two at once could leave the key file holding
    // the key whose transaction lost.
    let lock_path = {
        let mut p = path.as_os_str().to_owned();
        p.push(".lock");
        std::path::PathBuf::from(p)
    };
    let io = |source| KeyError::Io {
        path: lock_path.display().to_string(),
        source,
    };
    let lock = std::fs::File::create(&lock_path).map_err(io)?;
    lock.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => io(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "another rotation of this key is running: let it finish",
        )),
        std::fs::TryLockError::Error(e) => io(e),
    })?;
    // A rotation cut short after its transaction is finished first, so the
    // old key below is the one the data keys are under.
    open_ring(meta, path, false).await?;
    let old = MasterKey::load(path)?;
    let mut new = [0u8; 32];
    rand::rng().fill_bytes(&mut new);
    let new = MasterKey(new);
    let next = next_key_path(path);
    write_private(&next, hex::encode(new.0).as_bytes()).map_err(|source| KeyError::Io {
        path: next.display().to_string(),
        source,
    })?;
    at(RotationStep::NextWritten);
    let mut rows = Vec::new();
    for (id, wrapped) in meta.data_keys().await? {
        let key = old.unwrap_key(&wrapped)?;
        rows.push((id, wrapped, new.wrap(&key)?));
    }
    meta.rewrap_data_keys(&rows).await?;
    at(RotationStep::Rewrapped);
    if let Err(e) = finish_rename(path) {
        // A server starting meanwhile finishes the rename itself.
        let done = MasterKey::load(path).is_ok_and(|k| k.0 == new.0);
        if !done {
            return Err(e);
        }
    }
    drop(lock);
    Ok(rows.len())
}

/// Writes `bytes` to `path` readable by the owner only, durably.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The unwrapped data keys, and which one encrypts new blocks.
pub struct KeyRing {
    keys: HashMap<i64, [u8; 32]>,
    current: i64,
    name_key: [u8; 32],
}

impl KeyRing {
    /// A ring of one fixed data key, for tests of the stored form.
    #[cfg(test)]
    pub fn for_tests() -> Self {
        Self {
            keys: HashMap::from([(1, [7u8; 32])]),
            current: 1,
            name_key: [9u8; 32],
        }
    }

    /// Unwraps every data key; makes the first one on a new installation.
    pub async fn load(meta: &Meta, master: &MasterKey) -> Result<Self, KeyError> {
        let mut rows = meta.data_keys().await?;
        if rows.is_empty() {
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            let wrapped = master.wrap(&key)?;
            let id = meta.insert_data_key(&wrapped).await?;
            rows.push((id, wrapped));
        }
        let mut keys = HashMap::new();
        let mut current = 0;
        for (id, wrapped) in rows {
            keys.insert(id, master.unwrap_key(&wrapped)?);
            current = current.max(id);
        }
        let name_key = blake3::derive_key("tessera 2026 object names v1", &master.0);
        Ok(Self {
            keys,
            current,
            name_key,
        })
    }

    pub fn current(&self) -> (i64, &[u8; 32]) {
        (self.current, &self.keys[&self.current])
    }

    pub fn get(&self, id: i64) -> Option<&[u8; 32]> {
        self.keys.get(&id)
    }

    /// An object name that reveals nothing about the block it holds: 128
    /// bits of a keyed hash of its id (the name is made unique by what the
    /// store adds to it, and stored twice a block, so it is kept short).
    pub fn object_name(&self, id: &tessera_proto::BlockId) -> String {
        let h = blake3::keyed_hash(&self.name_key, id.as_bytes()).to_hex();
        format!("blocks/{}/{}", &h[..2], &h[2..32])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data key wrapped by an earlier release (another AES-GCM
    /// implementation) still unwraps; a wrong master key does not.
    #[test]
    fn a_data_key_wrapped_by_an_earlier_release_unwraps() {
        let wrapped = hex::decode(
            "12d87944c8d59fc6b9a82987bbcb22257c8f54679f7c449001d7853a1ff12c9b\
             8e586d42697694ddfd5f3d17d9edd82f1ec46b3123576870fd02111d",
        )
        .unwrap();
        assert_eq!(MasterKey([5; 32]).unwrap_key(&wrapped).unwrap(), [6; 32]);
        assert!(matches!(
            MasterKey([4; 32]).unwrap_key(&wrapped),
            Err(KeyError::Unwrap)
        ));
        let again = MasterKey([5; 32]).wrap(&[6; 32]).unwrap();
        assert_eq!(again.len(), wrapped.len());
        assert_eq!(MasterKey([5; 32]).unwrap_key(&again).unwrap(), [6; 32]);
    }
}
