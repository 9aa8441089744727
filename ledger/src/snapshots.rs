//! The snapshots a node keeps on disk and serves (PROTOCOL.md §10, *Snapshots*): each in a directory of its own,
//! `<height>` (20 digits), holding `manifest`, `block` (the snapshot's block and its commit certificate, as
//! `[block bstr, certificate bstr]`) and `chunk-<index>`. A snapshot is written in `tmp-<height>`, every file synced,
//! then renamed into place: a crash while writing leaves a `tmp-` directory, removed at the next open, and never a
//! snapshot with a missing or partial file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use crate::Block;
use crate::genesis::Genesis;
use crate::hash::Hash;
use crate::snapshot::{CHUNKS_MAX, Chunker, Manifest, manifest_hash};
use crate::store::{RocksReader, Stored};

/// Snapshots a node keeps: the newest ones; an older one is deleted when a new one is complete.
pub const SNAPSHOTS_KEPT: usize = 2;

/// A snapshot a node holds, as it offers it to peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub height: u64,
    pub manifest_hash: Hash,
    pub chunks: u32,
}

/// The snapshots directory of a node.
pub struct Snapshots {
    dir: PathBuf,
    /// The complete snapshots, newest first (read at open, updated by [`Snapshots::write`]).
    held: Mutex<Vec<Held>>,
}

const TMP_PREFIX: &str = "tmp-";

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)?.sync_all().with_context(|| format!("syncing {}", dir.display()))
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all().with_context(|| format!("syncing {}", path.display()))
}

impl Snapshots {
    /// Opens (or creates) the directory, removing what an interrupted write left.
    pub fn open(dir: &Path) -> anyhow::Result<Snapshots> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut held = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP_PREFIX) {
                tracing::info!(snapshot = %name, "removing a snapshot whose writing was interrupted");
                std::fs::remove_dir_all(entry.path())?;
            } else if let Ok(height) = name.parse::<u64>() {
                match read_held(&entry.path(), height) {
                    Ok(one) => held.push(one),
                    Err(error) => {
                        tracing::warn!(snapshot = %name, "{error:#}: removing an unreadable snapshot");
                        std::fs::remove_dir_all(entry.path())?;
                    }
                }
            }
        }
        held.sort_by_key(|one| std::cmp::Reverse(one.height));
        Ok(Snapshots { dir: dir.to_path_buf(), held: Mutex::new(held) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Held>> {
        self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The complete snapshots, newest first.
    pub fn held(&self) -> Vec<Held> {
        self.lock().clone()
    }

    fn path(&self, height: u64) -> PathBuf {
        self.dir.join(format!("{height:020}"))
    }

    /// Writes the snapshot of the state after block `height`, read from a RocksDB snapshot of `reader`; `None`
    /// when the ledger has moved past `height` already (the snapshot would be of another block). Then keeps the
    /// newest [`SNAPSHOTS_KEPT`].
    pub fn write(&self, reader: &RocksReader, genesis: &Arc<Genesis>, height: u64) -> anyhow::Result<Option<Held>> {
        if self.lock().iter().any(|one| one.height == height) {
            return Ok(None);
        }
        let state = reader.snapshot(genesis)?;
        if state.height() != height || height == 0 {
            return Ok(None);
        }
        let stored = reader.block(height)?.with_context(|| format!("block {height} is not stored"))?;
        let block = Block::from_bytes(&stored.block).with_context(|| format!("stored block {height}"))?;
        let state_root = block.header().state_root;
        let tmp = self.dir.join(format!("{TMP_PREFIX}{height}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut chunker = Chunker::new();
        let mut written = 0usize;
        let mut write_chunk = |chunk: Vec<u8>| -> anyhow::Result<()> {
            anyhow::ensure!(written < CHUNKS_MAX, "the state needs more than {CHUNKS_MAX} chunks");
            write_synced(&tmp.join(format!("chunk-{written}")), &chunk)?;
            written += 1;
            Ok(())
        };
        for (key, value) in state.all() {
            if let Some(chunk) = chunker.push(&key, &value) {
                write_chunk(chunk)?;
            }
        }
        state.check()?;
        let (last, manifest) = chunker.finish(height, state_root);
        if let Some(chunk) = last {
            write_chunk(chunk)?;
        }
        // A state that does not add up to its block's root is never offered.
        manifest.check(height, &state_root).context("the stored state does not match its block's state root")?;
        let manifest_bytes = manifest.to_bytes();
        write_synced(&tmp.join("manifest"), &manifest_bytes)?;
        write_synced(&tmp.join("block"), &block_record(&stored))?;
        sync_dir(&tmp)?;
        std::fs::rename(&tmp, self.path(height))?;
        sync_dir(&self.dir)?;
        let held = Held {
            height,
            manifest_hash: manifest_hash(&manifest_bytes),
            chunks: u32::try_from(manifest.chunks.len()).unwrap_or(u32::MAX),
        };
        let old: Vec<u64> = {
            let mut all = self.lock();
            all.insert(0, held);
            all.sort_by_key(|one| std::cmp::Reverse(one.height));
            let keep = SNAPSHOTS_KEPT.min(all.len());
            all.split_off(keep).into_iter().map(|one| one.height).collect()
        };
        for height in old {
            std::fs::remove_dir_all(self.path(height))?;
        }
        Ok(Some(held))
    }

    /// A held snapshot's block with its certificate, and its manifest's bytes.
    pub fn manifest(&self, height: u64) -> anyhow::Result<Option<(Stored, Vec<u8>)>> {
        if !self.lock().iter().any(|one| one.height == height) {
            return Ok(None);
        }
        let path = self.path(height);
        let stored = read_block_record(&std::fs::read(path.join("block"))?)?;
        Ok(Some((stored, std::fs::read(path.join("manifest"))?)))
    }

    /// Chunk `index` of a held snapshot.
    pub fn chunk(&self, height: u64, index: u32) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(held) = self.lock().iter().find(|one| one.height == height).copied() else { return Ok(None) };
        if index >= held.chunks {
            return Ok(None);
        }
        Ok(Some(std::fs::read(self.path(height).join(format!("chunk-{index}")))?))
    }
}

fn block_record(stored: &Stored) -> Vec<u8> {
    protocol::codec::encode(&(serde_bytes::Bytes::new(&stored.block), serde_bytes::Bytes::new(&stored.certificate)))
}

fn read_block_record(bytes: &[u8]) -> anyhow::Result<Stored> {
    let (block, certificate): (serde_bytes::ByteBuf, serde_bytes::ByteBuf) =
        serde_cbor::from_slice(bytes).context("a snapshot's block record")?;
    Ok(Stored { block: block.into_vec(), certificate: certificate.into_vec() })
}

/// A complete snapshot's offer, from its files: its manifest decodes, and every chunk it names is there.
fn read_held(path: &Path, height: u64) -> anyhow::Result<Held> {
    let bytes = std::fs::read(path.join("manifest"))?;
    let manifest = Manifest::from_bytes(&bytes)?;
    anyhow::ensure!(manifest.height == height, "the manifest is of another height");
    read_block_record(&std::fs::read(path.join("block"))?)?;
    for index in 0..manifest.chunks.len() {
        anyhow::ensure!(path.join(format!("chunk-{index}")).is_file(), "chunk {index} is missing");
    }
    Ok(Held {
        height,
        manifest_hash: manifest_hash(&bytes),
        chunks: u32::try_from(manifest.chunks.len()).unwrap_or(u32::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{BLOCK_VERSION, Header};
    use crate::snapshot::CHUNK_PAIR_BYTES;
    use crate::state::{Lattice, Writes};
    use crate::store::{Outcome, RocksStore, Store};

    fn genesis() -> Arc<Genesis> {
        let key = protocol::Keypair::from_seed(&[1; 32]).public();
        Arc::new(Genesis::parse(&Genesis::devnet_text("kos-test", 1_000, &[key], &[key], 5)).unwrap())
    }

    /// Commits block `height` with `writes` over `state`, its header naming the state root after them.
    fn commit(store: &mut RocksStore, state: &mut BTreeMapState, height: u64, writes: Writes) {
        for (key, value) in &writes {
            match value {
                Some(value) => state.insert(key.clone(), value.clone()),
                None => state.remove(key),
            };
        }
        let mut lattice = Lattice::default();
        for (key, value) in state.iter() {
            lattice.add(key, value);
        }
        let header = Header {
            version: BLOCK_VERSION,
            network: protocol::NetworkId::new("kos-test").unwrap(),
            height,
            time_ms: height,
            parent: Hash::ZERO,
            proposer: protocol::Keypair::from_seed(&[1; 32]).public(),
            entries_root: Hash::ZERO,
            entry_count: 0,
            state_root: lattice.root(),
            validators_hash: Hash::ZERO,
        };
        let block = Block::new(header, Vec::new());
        let stored = Stored { block: block.to_bytes(), certificate: vec![height as u8] };
        store.commit(height, &stored, &writes, &Outcome::default()).unwrap();
    }

    type BTreeMapState = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

    fn big_writes(count: usize, salt: u8) -> Writes {
        (0..count).map(|i| (format!("k{i:06}").into_bytes(), Some(vec![salt; 1_000]))).collect()
    }

    /// Issue 28, item 1: a node writes the snapshot of a block's state, whose chunks rebuild exactly that state, keeps
    /// the newest two, and finds them again when it opens the directory.
    #[test]
    fn snapshots_are_written_checked_kept_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(&dir.path().join("ledger")).unwrap();
        let reader = store.reader();
        let genesis = genesis();
        let snapshots = Snapshots::open(&dir.path().join("snapshots")).unwrap();
        let mut state = BTreeMapState::new();
        commit(&mut store, &mut state, 1, big_writes(2_500, 1));
        let first = snapshots.write(&reader, &genesis, 1).unwrap().expect("a snapshot of block 1");
        assert_eq!(first.chunks, 3, "2.5 MB of pairs in chunks of {CHUNK_PAIR_BYTES} bytes");
        // A height the ledger has moved past is not written (its state is gone).
        commit(&mut store, &mut state, 2, big_writes(10, 2));
        assert_eq!(snapshots.write(&reader, &genesis, 1).unwrap(), None);
        commit(&mut store, &mut state, 3, big_writes(10, 3));
        assert!(snapshots.write(&reader, &genesis, 2).unwrap().is_none());
        snapshots.write(&reader, &genesis, 3).unwrap().unwrap();
        commit(&mut store, &mut state, 4, big_writes(5, 4));
        snapshots.write(&reader, &genesis, 4).unwrap().unwrap();
        let held: Vec<u64> = snapshots.held().iter().map(|one| one.height).collect();
        assert_eq!(held, vec![4, 3], "the newest two are kept");
        // The served pieces rebuild block 4's state, checked against its header.
        let (stored, manifest) = snapshots.manifest(4).unwrap().unwrap();
        let block = Block::from_bytes(&stored.block).unwrap();
        let manifest = Manifest::from_bytes(&manifest).unwrap();
        manifest.check(4, &block.header().state_root).unwrap();
        let mut rebuilt = BTreeMapState::new();
        for index in 0..manifest.chunks.len() {
            let chunk = snapshots.chunk(4, index as u32).unwrap().unwrap();
            rebuilt.extend(manifest.chunk(index, &chunk).unwrap());
        }
        assert_eq!(rebuilt, state);
        assert_eq!(snapshots.chunk(4, 99).unwrap(), None);
        assert_eq!(snapshots.manifest(1).unwrap(), None);
        drop(snapshots);
        let again = Snapshots::open(&dir.path().join("snapshots")).unwrap();
        assert_eq!(again.held().iter().map(|one| one.height).collect::<Vec<_>>(), vec![4, 3]);
    }

    /// Issue 28, item 1: a crash while a snapshot is written leaves a `tmp-` directory, which the next open removes;
    /// a snapshot directory with a chunk missing is not offered.
    #[test]
    fn an_interrupted_or_damaged_snapshot_is_never_offered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshots");
        std::fs::create_dir_all(path.join("tmp-1000")).unwrap();
        std::fs::write(path.join("tmp-1000").join("chunk-0"), b"half").unwrap();
        let mut store = RocksStore::open(&dir.path().join("ledger")).unwrap();
        let mut state = BTreeMapState::new();
        commit(&mut store, &mut state, 1, big_writes(1_500, 1));
        let snapshots = Snapshots::open(&path).unwrap();
        assert!(!path.join("tmp-1000").exists());
        snapshots.write(&store.reader(), &genesis(), 1).unwrap().unwrap();
        drop(snapshots);
        std::fs::remove_file(path.join(format!("{:020}", 1)).join("chunk-1")).unwrap();
        let snapshots = Snapshots::open(&path).unwrap();
        assert!(snapshots.held().is_empty());
        assert!(!path.join(format!("{:020}", 1)).exists());
    }
}
