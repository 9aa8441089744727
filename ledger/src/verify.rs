//! Verifying a ledger from nothing but its genesis file and its blocks with their certificates, as anyone can:
//! each block must follow its parent, carry a commit certificate signed by more than 2/3 of the voting power of
//! the validators of the state before it, and re-execute to the state root it claims. And the export format
//! (PROTOCOL.md §10) that carries a ledger between machines.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use anyhow::{Context as _, bail};

use crate::block::Block;
use crate::consensus::check;
use crate::consensus::context::ValidatorSet;
use crate::consensus::wire;
use crate::genesis::Genesis;
use crate::hash::Hash;
use crate::reads::*;
use crate::state::{BlockContext, State};
use crate::store::{Store, Stored};

/// Re-executes a chain block by block from genesis.
pub struct Verifier {
    state: State,
    parent: Hash,
    /// The last verified block's time (the genesis time before block 1).
    parent_time_ms: u64,
    height: u64,
    entries: u64,
    /// Entries verified, by kind name (what a re-execution exercised).
    kinds: BTreeMap<&'static str, u64>,
    /// Effects of the verified blocks, by event name ([`crate::state::Event::name`]).
    effects: BTreeMap<&'static str, u64>,
}

impl Verifier {
    pub fn new(genesis: Arc<Genesis>) -> Verifier {
        Verifier {
            parent: genesis.hash,
            parent_time_ms: genesis.time_ms,
            state: State::genesis(genesis),
            height: 0,
            entries: 0,
            kinds: BTreeMap::new(),
            effects: BTreeMap::new(),
        }
    }

    /// The height of the last verified block.
    pub fn height(&self) -> u64 {
        self.height
    }

    /// The hash of the last verified block (the genesis hash before block 1).
    pub fn tip_hash(&self) -> Hash {
        self.parent
    }

    /// Entries verified so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Entries verified so far, by kind name (`transfer`, `reading`, …).
    pub fn kinds(&self) -> &BTreeMap<&'static str, u64> {
        &self.kinds
    }

    /// Effects of the verified blocks so far, by event name (`escrow released`, `proposal passed`, …).
    pub fn effects(&self) -> &BTreeMap<&'static str, u64> {
        &self.effects
    }

    /// The state after the last verified block.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Verifies the next block (at [`Verifier::height`] + 1) and applies it.
    pub fn push(&mut self, stored: &Stored) -> Result<(), String> {
        let height = self.height + 1;
        let block = Block::from_bytes(&stored.block).map_err(|error| format!("block {height}: {error}"))?;
        let certificate = wire::certificate_from_bytes(&stored.certificate)
            .map_err(|error| format!("certificate {height}: {error}"))?;
        let header = block.header();
        let genesis = self.state.genesis_info().clone();
        let validators = ValidatorSet::new(self.state.validators());
        let parent = check::Parent {
            network: &genesis.network,
            height: self.height,
            hash: self.parent,
            time_ms: self.parent_time_ms,
            validators: &validators,
            entries_max: genesis.params.block_entries_max,
            version: self.state.protocol_version(),
        };
        check::check_header(header, &parent).map_err(|what| format!("block {height}: bad {what}"))?;
        if !check::certificate_is_for(&certificate, height, block.hash()) {
            return Err(format!("certificate {height} is for another block"));
        }
        check::check_commit(&genesis.network, &validators, &certificate, &mut check::verify_signature)
            .map_err(|error| format!("certificate {height}: {error}"))?;
        let context = BlockContext { height, time_ms: header.time_ms, proposer: header.proposer };
        let executed = self
            .state
            .execute(context, block.entries(), &|_| false)
            .map_err(|(index, error)| format!("block {height} entry {index}: {error}"))?;
        if executed.state_root != header.state_root {
            return Err(format!("block {height}: the replayed state root differs from the block's"));
        }
        for entry in block.entries() {
            // The block executed, so every entry decodes.
            if let Ok(envelope) = protocol::Envelope::from_bytes(entry) {
                *self.kinds.entry(envelope.kind().name()).or_default() += 1;
            }
        }
        for event in &executed.events {
            *self.effects.entry(event.name()).or_default() += 1;
        }
        self.state.apply(executed.writes, executed.lattice, executed.pairs);
        self.parent = block.hash();
        self.parent_time_ms = header.time_ms;
        self.height = height;
        self.entries += block.entries().len() as u64;
        Ok(())
    }
}

/// Verifies every block of a store; returns the verified height.
pub fn verify_store(genesis: &Arc<Genesis>, store: &dyn Store) -> Result<u64, String> {
    let mut verifier = Verifier::new(genesis.clone());
    let tip = store.tip().map_err(|error| error.to_string())?;
    for height in 1..=tip {
        let stored =
            store.block(height).map_err(|error| error.to_string())?.ok_or(format!("block {height} missing"))?;
        verifier.push(&stored)?;
    }
    let root = store
        .state()
        .map(|pairs| State::from_pairs(genesis.clone(), pairs).root())
        .map_err(|error| error.to_string())?;
    if tip > 0 && root != verifier.state().root() {
        return Err(format!("the stored state differs from the state replayed up to block {tip}"));
    }
    Ok(tip)
}

/// The first record of an export file.
pub const EXPORT_MAGIC: &str = "kos/v1/ledger-export";
/// The first item of the last record of an export file (its trailer).
pub const EXPORT_END_MAGIC: &str = "kos/v1/ledger-export-end";
/// The first bytes of the trailer's CBOR: an array of 3 items, then the end magic as a text string of 24 bytes.
const END_PREFIX: [u8; 27] = {
    let mut prefix = [0u8; 27];
    prefix[0] = 0x83;
    prefix[1] = 0x78;
    prefix[2] = 24;
    let magic = EXPORT_END_MAGIC.as_bytes();
    let mut index = 0;
    while index < 24 {
        prefix[3 + index] = magic[index];
        index += 1;
    }
    prefix
};
const _: () = assert!(EXPORT_END_MAGIC.len() == 24);

/// Largest record of an export file (a block of at most 32 MiB and its certificate).
pub const EXPORT_RECORD_BYTES_MAX: usize = 40 * 1024 * 1024;

fn write_record(out: &mut dyn Write, record: &[u8]) -> anyhow::Result<()> {
    let length = u32::try_from(record.len()).context("record too large")?;
    out.write_all(&length.to_be_bytes())?;
    out.write_all(record)?;
    Ok(())
}

/// Writes an export: `u32be length ‖ CBOR` records, first `[magic, genesis text]`, then `[height, block,
/// certificate]` for every height in order, and last the trailer `[end magic, tip height, tip block hash]`
/// ([`ExportWriter::finish`]): without it, an export cut at a record boundary would look whole.
pub struct ExportWriter<'a> {
    out: &'a mut dyn Write,
    next: u64,
    tip: Hash,
}

impl<'a> ExportWriter<'a> {
    pub fn new(out: &'a mut dyn Write, genesis: &Genesis) -> anyhow::Result<ExportWriter<'a>> {
        let header = serde_cbor::to_vec(&(EXPORT_MAGIC, genesis.text.as_str()))?;
        write_record(out, &header)?;
        Ok(ExportWriter { out, next: 1, tip: genesis.hash })
    }

    pub fn block(&mut self, stored: &Stored) -> anyhow::Result<()> {
        let hash =
            Block::from_bytes(&stored.block).map_err(|error| anyhow::anyhow!("block {}: {error}", self.next))?.hash();
        let record = serde_cbor::to_vec(&(
            self.next,
            serde_bytes::Bytes::new(&stored.block),
            serde_bytes::Bytes::new(&stored.certificate),
        ))?;
        write_record(self.out, &record)?;
        self.next += 1;
        self.tip = hash;
        Ok(())
    }

    /// Writes the trailer: the height and hash of the last block written (0 and the genesis hash for none).
    pub fn finish(self) -> anyhow::Result<()> {
        let record =
            serde_cbor::to_vec(&(EXPORT_END_MAGIC, self.next - 1, serde_bytes::Bytes::new(self.tip.as_bytes())))?;
        write_record(self.out, &record)
    }
}

/// Reads an export: the genesis first, then the blocks one by one (bounded records; heights must be 1, 2, ...), then
/// the trailer, which must be there and be the file's last record.
pub struct ExportReader<'a> {
    input: &'a mut dyn Read,
    next: u64,
    /// The trailer's tip, once read.
    end: Option<(u64, Hash)>,
}

/// Reads one record; `None` at the end of the file, when it ends exactly between records.
fn read_record(input: &mut dyn Read) -> anyhow::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 4];
    let mut filled = 0;
    while filled < length.len() {
        match input.read(&mut length[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => bail!("the file ends inside a record's length ({filled} of 4 bytes): it is truncated"),
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > EXPORT_RECORD_BYTES_MAX {
        bail!("a record of {length} bytes is larger than allowed ({EXPORT_RECORD_BYTES_MAX})");
    }
    let mut record = vec![0u8; length];
    input.read_exact(&mut record).context("the file ends inside a record: it is truncated")?;
    Ok(Some(record))
}

impl<'a> ExportReader<'a> {
    /// Reads the header and parses the genesis it carries.
    pub fn open(input: &'a mut dyn Read) -> anyhow::Result<(Genesis, ExportReader<'a>)> {
        let header = read_record(input)?.context("the file is empty")?;
        let (magic, text): (String, String) =
            serde_cbor::from_slice(&header).context("the first record is not a kos ledger export header")?;
        if magic != EXPORT_MAGIC {
            bail!("not a kos ledger export (it starts with {magic:?})");
        }
        let genesis = Genesis::parse(&text).context("the export's genesis")?;
        Ok((genesis, ExportReader { input, next: 1, end: None }))
    }

    /// The next block, or `None` after the trailer (which must end the file). A file that ends without its trailer,
    /// or inside a record, is an error.
    pub fn next_block(&mut self) -> anyhow::Result<Option<Stored>> {
        if self.end.is_some() {
            return Ok(None);
        }
        let last = self.next - 1;
        let Some(record) = read_record(self.input)? else {
            bail!("the export ends after block {last} without its trailer: it is truncated");
        };
        // The trailer is told by its first bytes (an array of 3 whose first item is the end magic), without decoding a
        // whole block record twice.
        if record.starts_with(&END_PREFIX) {
            let (_, height, hash): (String, u64, serde_bytes::ByteBuf) =
                serde_cbor::from_slice(&record).context("the export's trailer")?;
            let hash =
                Hash(hash.as_ref().try_into().map_err(|_| anyhow::anyhow!("the trailer's hash is not 32 bytes"))?);
            if height != last {
                bail!("the trailer names tip {height}, but the export holds blocks up to {last}");
            }
            if read_record(self.input)?.is_some() {
                bail!("the export goes on after its trailer");
            }
            self.end = Some((height, hash));
            return Ok(None);
        }
        let (height, block, certificate): (u64, serde_bytes::ByteBuf, serde_bytes::ByteBuf) =
            serde_cbor::from_slice(&record).with_context(|| format!("record of block {}", self.next))?;
        if height != self.next {
            bail!("expected block {}, found block {height}", self.next);
        }
        self.next += 1;
        Ok(Some(Stored { block: block.into_vec(), certificate: certificate.into_vec() }))
    }

    /// The tip the trailer names (height and block hash), once [`ExportReader::next_block`] has returned `None`.
    pub fn end(&self) -> Option<(u64, Hash)> {
        self.end
    }
}

/// Verifies a whole export (PROTOCOL.md §10): its genesis (against `expected` when given), every block, and its
/// trailer against the last block verified. Returns the verifier, at the export's tip.
pub fn verify_export(input: &mut dyn Read, expected: Option<&Genesis>) -> anyhow::Result<Verifier> {
    let (exported, mut reader) = ExportReader::open(input)?;
    if let Some(expected) = expected
        && expected.hash != exported.hash
    {
        bail!("the export starts from genesis {}, not from the expected {}", exported.hash, expected.hash);
    }
    let mut verifier = Verifier::new(Arc::new(exported));
    while let Some(stored) = reader.next_block()? {
        verifier.push(&stored).map_err(|problem| anyhow::anyhow!("verification failed: {problem}"))?;
    }
    let (height, hash) = reader.end().context("the export has no trailer")?;
    if (height, hash) != (verifier.height(), verifier.tip_hash()) {
        bail!(
            "the trailer names tip {height} {hash}, but the blocks end at {} {}",
            verifier.height(),
            verifier.tip_hash()
        );
    }
    Ok(verifier)
}
