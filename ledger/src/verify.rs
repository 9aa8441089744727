//! Verifying a ledger from nothing but its genesis file and its blocks with their certificates, as anyone can:
//! each block must follow its parent, carry a commit certificate signed by more than 2/3 of the voting power of
//! the validators of the state before it, and re-execute to the state root it claims. And the export format
//! (PROTOCOL.md §10) that carries a ledger between machines.

use std::io::{Read, Write};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use malachite_types::{SigningProviderExt, ThresholdParams};

use crate::block::Block;
use crate::consensus::context::{Kos, Signer, ValidatorSet};
use crate::consensus::wire;
use crate::genesis::Genesis;
use crate::hash::Hash;
use crate::state::{BlockContext, State};
use crate::store::{Store, Stored};

/// Re-executes a chain block by block from genesis.
pub struct Verifier {
    ctx: Kos,
    signer: Signer,
    state: State,
    parent: Hash,
    height: u64,
    entries: u64,
}

impl Verifier {
    pub fn new(genesis: Arc<Genesis>) -> Verifier {
        Verifier {
            ctx: Kos { network: genesis.network.clone() },
            // Only used to verify; its key signs nothing.
            signer: Signer::new(genesis.network.clone(), &[0; 32]),
            parent: genesis.hash,
            state: State::genesis(genesis),
            height: 0,
            entries: 0,
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
        if header.height != height {
            return Err(format!("block {height}: has height {}", header.height));
        }
        if header.parent != self.parent {
            return Err(format!("block {height} does not follow its parent"));
        }
        if certificate.value_id != block.hash() || certificate.height.0 != height {
            return Err(format!("certificate {height} is for another block"));
        }
        let validators = ValidatorSet::new(self.state.validators());
        self.signer
            .verify_commit_certificate(&self.ctx, &certificate, &validators, ThresholdParams::default())
            .map_err(|error| format!("certificate {height}: {error}"))?;
        let context = BlockContext { height, time_ms: header.time_ms, proposer: header.proposer };
        let executed = self
            .state
            .execute(context, block.entries(), &|_| false)
            .map_err(|(index, error)| format!("block {height} entry {index}: {error}"))?;
        if executed.state_root != header.state_root {
            return Err(format!("block {height}: the replayed state root differs from the block's"));
        }
        self.state.apply(executed.writes, executed.lattice);
        self.parent = block.hash();
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
/// Largest record of an export file (a block of at most 32 MiB and its certificate).
pub const EXPORT_RECORD_BYTES_MAX: usize = 40 * 1024 * 1024;

fn write_record(out: &mut dyn Write, record: &[u8]) -> anyhow::Result<()> {
    let length = u32::try_from(record.len()).context("record too large")?;
    out.write_all(&length.to_be_bytes())?;
    out.write_all(record)?;
    Ok(())
}

/// Writes an export: `u32be length ‖ CBOR` records, first `[magic, genesis text]`, then `[height, block,
/// certificate]` for every height in order.
pub struct ExportWriter<'a> {
    out: &'a mut dyn Write,
    next: u64,
}

impl<'a> ExportWriter<'a> {
    pub fn new(out: &'a mut dyn Write, genesis: &Genesis) -> anyhow::Result<ExportWriter<'a>> {
        let header = serde_cbor::to_vec(&(EXPORT_MAGIC, genesis.text.as_str()))?;
        write_record(out, &header)?;
        Ok(ExportWriter { out, next: 1 })
    }

    pub fn block(&mut self, stored: &Stored) -> anyhow::Result<()> {
        let record = serde_cbor::to_vec(&(
            self.next,
            serde_bytes::Bytes::new(&stored.block),
            serde_bytes::Bytes::new(&stored.certificate),
        ))?;
        write_record(self.out, &record)?;
        self.next += 1;
        Ok(())
    }
}

/// Reads an export: the genesis first, then the blocks one by one (bounded records; heights must be 1, 2, ...).
pub struct ExportReader<'a> {
    input: &'a mut dyn Read,
    next: u64,
}

fn read_record(input: &mut dyn Read) -> anyhow::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 4];
    match input.read_exact(&mut length) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > EXPORT_RECORD_BYTES_MAX {
        bail!("a record of {length} bytes is larger than allowed ({EXPORT_RECORD_BYTES_MAX})");
    }
    let mut record = vec![0u8; length];
    input.read_exact(&mut record).context("the file ends inside a record")?;
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
        Ok((genesis, ExportReader { input, next: 1 }))
    }

    /// The next block, or `None` at the end of the file.
    pub fn next_block(&mut self) -> anyhow::Result<Option<Stored>> {
        let Some(record) = read_record(self.input)? else { return Ok(None) };
        let (height, block, certificate): (u64, serde_bytes::ByteBuf, serde_bytes::ByteBuf) =
            serde_cbor::from_slice(&record).with_context(|| format!("record of block {}", self.next))?;
        if height != self.next {
            bail!("expected block {}, found block {height}", self.next);
        }
        self.next += 1;
        Ok(Some(Stored { block: block.into_vec(), certificate: certificate.into_vec() }))
    }
}
