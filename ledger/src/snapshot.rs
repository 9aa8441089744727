//! State snapshots (PROTOCOL.md §10, *Snapshots*): the state after a block, cut into chunks that a node fetching
//! it can verify one by one, from whichever peer sends them. Sans-IO: [`Chunker`] turns the state's pairs (in key
//! order) into chunk bytes and a [`Manifest`]; [`Manifest::check`] verifies a manifest against a certified block
//! header's state root, and [`Manifest::chunk`] a chunk against the manifest. Files and the network are the node's.
//!
//! ```text
//! chunk    = [[key bstr, value bstr], ...]                  the pairs, in key order
//! manifest = [version (1), height, state_root, [[first_key bstr, pairs, lattice bstr(2048)], ...]]
//! manifest hash = tagged("kos/v1/snapshot", manifest bytes)
//! ```
//!
//! The state root is a lattice hash: the lane-wise sum of every pair's lattice. Each chunk's entry in the manifest
//! carries the lattice of its pairs, so a manifest is checked at once (its lattices must add up to the certified
//! root) and a chunk on arrival (its pairs must add up to its lattice, and its keys lie between its first key and
//! the next chunk's). A state other than the certified one would need a second set of pairs with the same lattice:
//! the collision the lattice hash is built to make infeasible. The cut is fixed by the rule below, so every honest
//! node holds the same manifest for a height: a node fetches chunks only from peers that offer the manifest it
//! checked, and a chunk that does not match it is its sender's fault.

use protocol::codec;
use serde_bytes::ByteBuf;
use serde_tuple::{Deserialize_tuple, Serialize_tuple};

use crate::hash::{self, Hash};
use crate::state::{LATTICE_BYTES, Lattice};

/// The snapshot format.
pub const SNAPSHOT_VERSION: u8 = 1;
/// A chunk ends before the pair that would take its pairs' bytes (key and value lengths) past this, so a chunk
/// holds at least one pair and at most this many bytes of pairs unless one pair alone is larger.
pub const CHUNK_PAIR_BYTES: usize = 1 << 20;
/// The most bytes a chunk's encoding may have (a receiver's decoding bound; a state value is far smaller).
pub const CHUNK_BYTES_MAX: usize = 4 << 20;
/// The most pairs a chunk may hold (each pair has at least one byte of key).
pub const CHUNK_PAIRS_MAX: u64 = CHUNK_PAIR_BYTES as u64;
/// The most chunks a snapshot may have: 4 GiB of state.
pub const CHUNKS_MAX: usize = 4096;
/// The most bytes a manifest's encoding may have (4,096 chunks of 2 KiB lattices, with their first keys: it fits a sync response with a block of 4 MiB).
pub const MANIFEST_BYTES_MAX: usize = 10 << 20;

/// One chunk as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct ChunkInfo {
    /// The chunk's first key.
    pub first_key: ByteBuf,
    /// How many pairs the chunk holds.
    pub pairs: u64,
    /// The lattice of its pairs ([`LATTICE_BYTES`]).
    pub lattice: ByteBuf,
}

/// What a snapshot holds: its height, the state root it rebuilds, and its chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize_tuple, Deserialize_tuple)]
pub struct Manifest {
    pub version: u8,
    /// The block after which this is the state.
    pub height: u64,
    /// That block's `state_root`.
    pub state_root: Hash,
    pub chunks: Vec<ChunkInfo>,
}

/// Why a manifest or a chunk is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("encoding: {0}")]
    Codec(String),
    #[error("snapshot version {0} is not supported")]
    Version(u8),
    #[error("more than {CHUNKS_MAX} chunks")]
    TooManyChunks,
    #[error("chunk {0}: its first key is not after the previous chunk's")]
    KeyOrder(usize),
    #[error("chunk {0}: a lattice of another length than {LATTICE_BYTES} bytes, or no pairs")]
    ChunkInfo(usize),
    #[error("the manifest is of height {found}, not {expected}")]
    Height { expected: u64, found: u64 },
    #[error("the manifest's state root is not the block's")]
    StateRoot,
    #[error("the chunks' lattices do not add up to the state root")]
    Lattices,
    #[error("there is no chunk {0}")]
    NoChunk(usize),
    #[error("chunk {index}: {what}")]
    Chunk { index: usize, what: &'static str },
}

fn encoded_len(bytes: usize) -> usize {
    // A bstr head: 1, 2, 3, 5 or 9 bytes.
    bytes
        + match bytes {
            0..=23 => 1,
            24..=0xff => 2,
            0x100..=0xffff => 3,
            0x1_0000..=0xffff_ffff => 5,
            _ => 9,
        }
}

/// Cuts the state's pairs, given in key order, into chunks (sans-IO): [`Chunker::push`] returns a chunk's bytes
/// each time one is full, [`Chunker::finish`] the last one and the manifest.
#[derive(Debug, Default)]
pub struct Chunker {
    /// The current chunk's encoding so far, without its array head.
    body: Vec<u8>,
    first_key: Vec<u8>,
    pairs: u64,
    bytes: usize,
    lattice: Lattice,
    chunks: Vec<ChunkInfo>,
}

impl Chunker {
    pub fn new() -> Chunker {
        Chunker::default()
    }

    /// Adds the next pair (keys strictly ascending); returns the previous chunk when this pair starts a new one.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
        let size = key.len() + value.len();
        let done = (self.pairs > 0 && self.bytes + size > CHUNK_PAIR_BYTES).then(|| self.close());
        if self.pairs == 0 {
            self.first_key = key.to_vec();
        }
        self.body.reserve(encoded_len(key.len()) + encoded_len(value.len()) + 1);
        codec::encode_into(&(serde_bytes::Bytes::new(key), serde_bytes::Bytes::new(value)), &mut self.body);
        self.pairs += 1;
        self.bytes += size;
        self.lattice.add(key, value);
        done
    }

    /// The chunks described so far.
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }

    fn close(&mut self) -> Vec<u8> {
        let mut chunk = array_head(self.pairs);
        chunk.append(&mut self.body);
        let lattice = std::mem::take(&mut self.lattice);
        self.chunks.push(ChunkInfo {
            first_key: ByteBuf::from(std::mem::take(&mut self.first_key)),
            pairs: self.pairs,
            lattice: ByteBuf::from(lattice.to_bytes()),
        });
        self.pairs = 0;
        self.bytes = 0;
        chunk
    }

    /// The last chunk (none for an empty state) and the manifest of the state after block `height`, whose root
    /// is `state_root`.
    pub fn finish(mut self, height: u64, state_root: Hash) -> (Option<Vec<u8>>, Manifest) {
        let last = (self.pairs > 0).then(|| self.close());
        (last, Manifest { version: SNAPSHOT_VERSION, height, state_root, chunks: self.chunks })
    }
}

/// The head of a CBOR array of `items` items (major type 4, shortest form).
fn array_head(items: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    match items {
        0..=23 => out.push(0x80 | items as u8),
        24..=0xff => out.extend_from_slice(&[0x98, items as u8]),
        0x100..=0xffff => {
            out.push(0x99);
            out.extend_from_slice(&(items as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0x9a);
            out.extend_from_slice(&(items as u32).to_be_bytes());
        }
        _ => {
            out.push(0x9b);
            out.extend_from_slice(&items.to_be_bytes());
        }
    }
    out
}

/// `tagged("kos/v1/snapshot", manifest bytes)`: what peers offer a snapshot by.
pub fn manifest_hash(bytes: &[u8]) -> Hash {
    hash::tagged("kos/v1/snapshot", &[bytes])
}

type Pairs = Vec<(ByteBuf, ByteBuf)>;

/// A chunk's pairs, checked.
pub type ChunkPairs = Vec<(Vec<u8>, Vec<u8>)>;

impl Manifest {
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a manifest and checks its form: the version, at most [`CHUNKS_MAX`] chunks, each with pairs and a
    /// lattice of [`LATTICE_BYTES`], first keys strictly ascending.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, SnapshotError> {
        let manifest: Manifest = codec::decode_with(bytes, MANIFEST_BYTES_MAX, CHUNKS_MAX as u64)
            .map_err(|error| SnapshotError::Codec(error.to_string()))?;
        if manifest.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(manifest.version));
        }
        if manifest.chunks.len() > CHUNKS_MAX {
            return Err(SnapshotError::TooManyChunks);
        }
        for (index, chunk) in manifest.chunks.iter().enumerate() {
            if chunk.lattice.len() != LATTICE_BYTES || chunk.pairs == 0 || chunk.pairs > CHUNK_PAIRS_MAX {
                return Err(SnapshotError::ChunkInfo(index));
            }
            if index > 0 && manifest.chunks[index - 1].first_key >= chunk.first_key {
                return Err(SnapshotError::KeyOrder(index));
            }
        }
        Ok(manifest)
    }

    /// Checks the manifest against the certified header of its block: the height, the state root, and that the
    /// chunks' lattices add up to that root.
    pub fn check(&self, height: u64, state_root: &Hash) -> Result<(), SnapshotError> {
        if self.height != height {
            return Err(SnapshotError::Height { expected: height, found: self.height });
        }
        if &self.state_root != state_root {
            return Err(SnapshotError::StateRoot);
        }
        let mut sum = Lattice::default();
        for (index, chunk) in self.chunks.iter().enumerate() {
            sum.absorb(&Lattice::from_bytes(&chunk.lattice).ok_or(SnapshotError::ChunkInfo(index))?);
        }
        if &sum.root() != state_root {
            return Err(SnapshotError::Lattices);
        }
        Ok(())
    }

    /// All the pairs the chunks hold.
    pub fn pairs(&self) -> u64 {
        self.chunks.iter().map(|chunk| chunk.pairs).sum()
    }

    /// Checks chunk `index` against the manifest and returns its pairs: canonical, as many pairs as the manifest
    /// says, keys strictly ascending from its first key and below the next chunk's, and their lattice the
    /// manifest's.
    pub fn chunk(&self, index: usize, bytes: &[u8]) -> Result<ChunkPairs, SnapshotError> {
        let info = self.chunks.get(index).ok_or(SnapshotError::NoChunk(index))?;
        let fail = |what| SnapshotError::Chunk { index, what };
        let pairs: Pairs = codec::decode_with(bytes, CHUNK_BYTES_MAX, CHUNK_PAIRS_MAX).map_err(|_| fail("encoding"))?;
        if pairs.len() as u64 != info.pairs {
            return Err(fail("not as many pairs as the manifest says"));
        }
        if pairs.first().map(|(key, _)| key) != Some(&info.first_key) {
            return Err(fail("its first key is not the manifest's"));
        }
        if pairs.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
            return Err(fail("keys not in strictly ascending order"));
        }
        if let (Some(next), Some((last, _))) = (self.chunks.get(index + 1), pairs.last())
            && last >= &next.first_key
        {
            return Err(fail("a key at or past the next chunk's first key"));
        }
        let mut lattice = Lattice::default();
        for (key, value) in &pairs {
            lattice.add(key, value);
        }
        if lattice.to_bytes() != info.lattice.as_slice() {
            return Err(fail("its pairs do not hash to the manifest's lattice"));
        }
        Ok(pairs.into_iter().map(|(key, value)| (key.into_vec(), value.into_vec())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(count: usize, value_len: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..count).map(|i| (format!("k{i:08}").into_bytes(), vec![(i % 251) as u8; value_len])).collect()
    }

    fn cut(pairs: &[(Vec<u8>, Vec<u8>)]) -> (Vec<Vec<u8>>, Manifest) {
        let mut chunker = Chunker::new();
        let mut chunks: Vec<Vec<u8>> = pairs.iter().filter_map(|(key, value)| chunker.push(key, value)).collect();
        let mut lattice = Lattice::default();
        for (key, value) in pairs {
            lattice.add(key, value);
        }
        let (last, manifest) = chunker.finish(9, lattice.root());
        chunks.extend(last);
        (chunks, manifest)
    }

    #[test]
    fn a_state_cut_into_chunks_verifies_and_rebuilds_whole() {
        let pairs = state(3_000, 1_000);
        let (chunks, manifest) = cut(&pairs);
        assert_eq!(chunks.len(), 3, "3 MB of pairs in chunks of at most 1 MiB");
        let bytes = manifest.to_bytes();
        let manifest = Manifest::from_bytes(&bytes).unwrap();
        manifest.check(9, &manifest.state_root.clone()).unwrap();
        assert_eq!(manifest.pairs(), 3_000);
        let mut rebuilt = Vec::new();
        for (index, chunk) in chunks.iter().enumerate() {
            assert!(chunk.len() <= CHUNK_BYTES_MAX);
            rebuilt.extend(manifest.chunk(index, chunk).unwrap());
        }
        assert_eq!(rebuilt, pairs);
        // The same state cuts the same way: every honest node holds the same manifest.
        assert_eq!(manifest_hash(&cut(&pairs).1.to_bytes()), manifest_hash(&bytes));
    }

    #[test]
    fn a_pair_larger_than_a_chunk_gets_a_chunk_of_its_own() {
        let mut pairs = state(3, 10);
        pairs[1].1 = vec![7; CHUNK_PAIR_BYTES + 5];
        let (chunks, manifest) = cut(&pairs);
        assert_eq!(chunks.len(), 3);
        assert_eq!(manifest.chunk(1, &chunks[1]).unwrap(), vec![pairs[1].clone()]);
    }

    #[test]
    fn a_wrong_manifest_or_chunk_is_refused() {
        let pairs = state(2_500, 1_000);
        let (chunks, manifest) = cut(&pairs);
        let root = manifest.state_root;
        assert_eq!(manifest.check(8, &root), Err(SnapshotError::Height { expected: 8, found: 9 }));
        assert_eq!(manifest.check(9, &Hash([1; 32])), Err(SnapshotError::StateRoot));
        // Lattices moved between chunks still add up, but no honest chunk matches them: the chunk is refused (and
        // the node fetches only from peers that offer the manifest it checked).
        let mut skewed = manifest.clone();
        let mut first = Lattice::from_bytes(&skewed.chunks[0].lattice).unwrap();
        let mut second = Lattice::from_bytes(&skewed.chunks[1].lattice).unwrap();
        first.add(b"x", b"y");
        second.remove(b"x", b"y");
        skewed.chunks[0].lattice = ByteBuf::from(first.to_bytes());
        skewed.chunks[1].lattice = ByteBuf::from(second.to_bytes());
        skewed.check(9, &root).unwrap();
        assert!(matches!(skewed.chunk(0, &chunks[0]), Err(SnapshotError::Chunk { index: 0, .. })));
        // A lattice that does not add up to the root.
        let mut wrong = manifest.clone();
        wrong.chunks[2].lattice = ByteBuf::from(vec![0; LATTICE_BYTES]);
        assert_eq!(wrong.check(9, &root), Err(SnapshotError::Lattices));
        // A changed value, a dropped pair, a chunk given for another index, and junk.
        let mut pairs0 = manifest.chunk(0, &chunks[0]).unwrap();
        pairs0[3].1[0] ^= 1;
        let encode = |pairs: &[(Vec<u8>, Vec<u8>)]| {
            let pairs: Pairs =
                pairs.iter().map(|(k, v)| (ByteBuf::from(k.clone()), ByteBuf::from(v.clone()))).collect();
            codec::encode(&pairs)
        };
        assert!(manifest.chunk(0, &encode(&pairs0)).is_err());
        pairs0.remove(3);
        assert!(manifest.chunk(0, &encode(&pairs0)).is_err());
        assert!(manifest.chunk(1, &chunks[0]).is_err());
        assert!(manifest.chunk(0, b"junk").is_err());
        assert_eq!(manifest.chunk(3, &chunks[0]), Err(SnapshotError::NoChunk(3)));
        // Manifests out of key order or of another version.
        let mut unordered = manifest.clone();
        unordered.chunks.swap(0, 1);
        assert_eq!(Manifest::from_bytes(&unordered.to_bytes()), Err(SnapshotError::KeyOrder(1)));
        let mut version = manifest.clone();
        version.version = 2;
        assert_eq!(Manifest::from_bytes(&version.to_bytes()), Err(SnapshotError::Version(2)));
    }

    #[test]
    fn array_heads_are_canonical() {
        for items in [0u64, 23, 24, 255, 256, 65_535, 65_536, 1 << 32] {
            let head = array_head(items);
            // The same head serde_cbor writes for an array of that many items (checked on a small one).
            if items <= 256 {
                let array = vec![0u8; items as usize];
                let encoded = codec::encode(&array);
                assert_eq!(&encoded[..head.len()], &head[..], "{items} items");
            }
        }
    }
}
