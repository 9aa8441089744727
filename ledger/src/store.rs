//! Storage behind one trait: RocksDB for nodes, memory for fast core tests and simulations.
//!
//! What is stored: each committed block with its commit certificate (by height), the block's events (what its
//! execution did, by height: a local record, not part of consensus), the state's
//! key-value pairs, an index from entry id to (height, position), and the consensus write-ahead log of the height
//! in progress. A commit writes the block, certificate, events, state changes and index in one atomic, synced batch
//! and clears the WAL, so after `kill -9` a node has every block it acknowledged and a state that matches its last
//! block.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use protocol::Id;

use crate::genesis::Genesis;
use crate::state::{Event, Kv, Writes};

/// A committed block as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub block: Vec<u8>,
    pub certificate: Vec<u8>,
}

/// What a committed block did, as this node executed it: its entries' ids in block order (for the index) and its
/// events. The events are kept beside the block, so that whoever follows the ledger can read a commit it missed
/// without executing it again (the ids are not: the block's entries give them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub entry_ids: Vec<Id>,
    pub events: Vec<Event>,
    /// The validators of the block's height (key, power), when they are not the previous height's: a change of the
    /// set, recorded with the block's header and certificate for nodes that trace the set without executing the
    /// blocks (PROTOCOL.md §11, *Tracing the validators*).
    pub validators: Option<Vec<(protocol::PublicKey, u64)>>,
    /// The state's lattice and its number of pairs after the block, kept with it so that a restart need not sum
    /// the whole state before it runs ([`Store::summary`]); `None`: the store forgets any it kept.
    pub summary: Option<(crate::state::Lattice, u64)>,
}

/// A change of the validator set as recorded: the header of the first block the new set signed, its certificate,
/// and the set (key, power) in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub header: Vec<u8>,
    pub certificate: Vec<u8>,
    pub validators: Vec<(protocol::PublicKey, u64)>,
}

/// What the ledger needs from storage.
pub trait Store: Send {
    /// The height of the last committed block (0 before block 1).
    fn tip(&self) -> anyhow::Result<u64>;
    fn block(&self, height: u64) -> anyhow::Result<Option<Stored>>;
    /// Every state pair, in key order.
    fn state(&self) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Where an entry is: (height, position in the block).
    fn locate(&self, id: &Id) -> anyhow::Result<Option<(u64, u32)>>;
    /// The events of the block at `height` (`None` before it commits, or for a block an older kos stored).
    fn events(&self, height: u64) -> anyhow::Result<Option<Vec<Event>>>;
    /// Writes a block, its certificate, its events, the state changes and the entry index atomically and durably,
    /// and clears the WAL.
    fn commit(&mut self, height: u64, stored: &Stored, writes: &Writes, outcome: &Outcome) -> anyhow::Result<()>;
    /// Adds a WAL record for `height` (buffered until [`Store::wal_sync`]).
    fn wal_append(&mut self, height: u64, record: Vec<u8>) -> anyhow::Result<()>;
    /// Makes every appended WAL record durable.
    fn wal_sync(&mut self) -> anyhow::Result<()>;
    /// The durable WAL records of `height`, in order (empty if the WAL belongs to another height).
    fn wal(&self, height: u64) -> anyhow::Result<Vec<Vec<u8>>>;
    /// The summary the last commit kept with the state ([`Outcome::summary`]): its height, lattice and number of
    /// pairs; `None` when that commit kept none.
    fn summary(&self) -> anyhow::Result<Option<(u64, crate::state::Lattice, u64)>> {
        Ok(None)
    }
    /// The committed state's pairs to read through, when the state is kept out of memory (a home's
    /// [`Profile::Small`]); `None`: the engine holds the state in memory.
    fn backing(&self) -> Option<Arc<dyn crate::state::Backing>> {
        None
    }
}

/// Memory storage. Clones share the same data, so a simulation can "crash" a node (drop it) and restart it on
/// what was durable: WAL records appended but not synced are lost in a crash ([`MemoryStore::crash`]).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore(Arc<Mutex<Memory>>);

#[derive(Debug, Default)]
struct Memory {
    blocks: BTreeMap<u64, Stored>,
    events: BTreeMap<u64, Vec<Event>>,
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    index: BTreeMap<Id, (u64, u32)>,
    wal_height: u64,
    wal: Vec<Vec<u8>>,
    wal_synced: usize,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets WAL records that were appended but never synced, as a power cut would.
    pub fn crash(&self) {
        let mut memory = self.lock();
        let synced = memory.wal_synced;
        memory.wal.truncate(synced);
    }
}

impl Store for MemoryStore {
    fn tip(&self) -> anyhow::Result<u64> {
        Ok(self.lock().blocks.keys().next_back().copied().unwrap_or(0))
    }

    fn block(&self, height: u64) -> anyhow::Result<Option<Stored>> {
        Ok(self.lock().blocks.get(&height).cloned())
    }

    fn state(&self) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.lock().state.iter().map(|(key, value)| (key.clone(), value.clone())).collect())
    }

    fn locate(&self, id: &Id) -> anyhow::Result<Option<(u64, u32)>> {
        Ok(self.lock().index.get(id).copied())
    }

    fn events(&self, height: u64) -> anyhow::Result<Option<Vec<Event>>> {
        Ok(self.lock().events.get(&height).cloned())
    }

    fn commit(&mut self, height: u64, stored: &Stored, writes: &Writes, outcome: &Outcome) -> anyhow::Result<()> {
        let mut memory = self.lock();
        memory.blocks.insert(height, stored.clone());
        memory.events.insert(height, outcome.events.clone());
        for (key, value) in writes {
            match value {
                Some(value) => memory.state.insert(key.clone(), value.clone()),
                None => memory.state.remove(key),
            };
        }
        for (position, id) in outcome.entry_ids.iter().enumerate() {
            memory.index.insert(*id, (height, u32::try_from(position).unwrap_or(u32::MAX)));
        }
        memory.wal.clear();
        memory.wal_synced = 0;
        memory.wal_height = height + 1;
        Ok(())
    }

    fn wal_append(&mut self, height: u64, record: Vec<u8>) -> anyhow::Result<()> {
        let mut memory = self.lock();
        if memory.wal_height != height {
            memory.wal.clear();
            memory.wal_synced = 0;
            memory.wal_height = height;
        }
        memory.wal.push(record);
        Ok(())
    }

    fn wal_sync(&mut self) -> anyhow::Result<()> {
        let mut memory = self.lock();
        memory.wal_synced = memory.wal.len();
        Ok(())
    }

    fn wal(&self, height: u64) -> anyhow::Result<Vec<Vec<u8>>> {
        let memory = self.lock();
        Ok(if memory.wal_height == height { memory.wal[..memory.wal_synced].to_vec() } else { Vec::new() })
    }
}

const CF_BLOCKS: &str = "blocks";
const CF_STATE: &str = "state";
const CF_INDEX: &str = "index";
const CF_WAL: &str = "wal";
const CF_EVENTS: &str = "events";
const CF_CHANGES: &str = "changes";
/// Every column family, in the order they are opened.
const FAMILIES: [&str; 6] = [CF_BLOCKS, CF_EVENTS, CF_STATE, CF_INDEX, CF_WAL, CF_CHANGES];
const META_TIP: &[u8] = b"tip";
/// The lowest height whose block the store keeps (a u64, big-endian; absent: 1, nothing pruned).
const META_FIRST: &[u8] = b"first";
/// Most heights one commit prunes: a node switched to `full` on a long archive catches up a few commits at a time
/// instead of in one long write.
pub const PRUNE_PER_COMMIT_MAX: u64 = 64;
/// The fewest blocks a pruning store keeps: more than a lagging follower of the node's commits reads back from the
/// store (the commit broadcast holds 256, the event feed starts 64 blocks back), with room to spare, and what
/// syncing peers and the API's recent blocks need.
pub const KEEP_BLOCKS_MIN: u64 = 1024;
const META_WAL_HEIGHT: &[u8] = b"wal-height";
/// The lowest height from which the `changes` family records every change of the validator set (a u64,
/// big-endian; absent: 1). A database migrated from format 2 records changes only from then on.
const META_CHANGES_FROM: &[u8] = b"changes-from";
/// A state sync is writing the state of a snapshot (the height, a u64 big-endian): until it finishes, the `state`
/// family holds part of a state, which an open throws away.
const META_RESTORING: &[u8] = b"restoring";
/// The state's summary after the tip's block ([`Outcome::summary`]): its height and number of pairs (u64s,
/// big-endian) and its lattice (2,048 bytes). Written with each commit that has one, deleted by any that has none.
const META_SUMMARY: &[u8] = b"summary";
/// The height of the snapshot of the state the ledger was last restored from (state sync; a u64, big-endian): its
/// first block kept, until pruning moves past it.
const META_RESTORED: &[u8] = b"restored";
/// The database's format (a u64, big-endian) in the default family.
const META_FORMAT: &[u8] = b"format";

/// The format of the ledger database this kos writes, and the newest it reads. Format 1 is the layout before the
/// format was recorded (the families of [`FAMILIES`], `events` created when missing); format 2 is the same layout
/// with its format recorded; format 3 adds the `changes` family (the validator set's changes, kept for ever,
/// pruning or not), which records changes from the migration on. A kos opening an older format migrates it (each step one synced write, so a crash
/// during a migration leaves the older format, migrated again at the next open); one opening a newer format refuses
/// it, saying what to do, before changing anything.
pub const FORMAT: u64 = 3;

/// What one column family's memtable may hold before it is switched for a new one and flushed. RocksDB's default
/// is 64 MiB a family: a home node writing a few kilobytes a block held every block of hours in memory, and grew by
/// some 20 MB an hour.
pub const MEMTABLE_BYTES: usize = 4 * 1024 * 1024;
/// The `blocks` family's: a block may have 4 MiB (`block_bytes_max`), and one block should not fill a memtable.
pub const BLOCKS_MEMTABLE_BYTES: usize = 8 * 1024 * 1024;
/// Memtables a family may hold (the current one and those being flushed) before writes wait.
pub const MEMTABLES_PER_FAMILY_MAX: i32 = 4;
/// What the memtables of all the families may hold together before RocksDB flushes one (the family whose current
/// memtable is oldest, once they pass 7/8 of it): a flush trigger, not a hard cap — a memtable being flushed and a
/// block larger than a memtable still take their room meanwhile.
pub const MEMTABLES_TOTAL_BYTES: usize = 16 * 1024 * 1024;
/// The cache of blocks read from disk, shared by the families (RocksDB's default is 32 MiB a family).
pub const BLOCK_CACHE_BYTES: usize = 8 * 1024 * 1024;
/// A home's [`MEMTABLE_BYTES`]. A home writes some 6 MB an hour (a devnet home: blocks, events, state), so its
/// memtables, [`SMALL_MEMTABLES_TOTAL_BYTES`] together, are flushed every ten minutes or so; at a quarter of the
/// standard ones (4 MiB together) they were 3.5 MB of a 40 MB home.
pub const SMALL_MEMTABLE_BYTES: usize = 256 * 1024;
/// A home's [`BLOCKS_MEMTABLE_BYTES`].
pub const SMALL_BLOCKS_MEMTABLE_BYTES: usize = 1024 * 1024;
/// A home's [`MEMTABLES_TOTAL_BYTES`].
pub const SMALL_MEMTABLES_TOTAL_BYTES: usize = 1024 * 1024;
/// A home's buffer for writing a table file (a flush, a compaction).
pub const SMALL_WRITE_BUFFER_BYTES: u64 = 64 * 1024;
/// A home's [`BLOCK_CACHE_BYTES`]: its state is read through it (and its tables' index and filter blocks are kept
/// in it).
pub const SMALL_BLOCK_CACHE_BYTES: usize = 2 * 1024 * 1024;

/// How much memory the store may use: RocksDB's memtables and block cache (issue 28, item 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// A validator's or an archive's: [`MEMTABLE_BYTES`], [`BLOCKS_MEMTABLE_BYTES`], [`MEMTABLES_TOTAL_BYTES`],
    /// [`BLOCK_CACHE_BYTES`].
    #[default]
    Standard,
    /// A home's (a small board): [`SMALL_MEMTABLE_BYTES`], [`SMALL_BLOCKS_MEMTABLE_BYTES`],
    /// [`SMALL_MEMTABLES_TOTAL_BYTES`], [`SMALL_BLOCK_CACHE_BYTES`]. A block larger than its family's memtable (a
    /// block may have 4 MiB) still goes in whole; the memtable is then switched and flushed at once. The ledger state
    /// stays on disk and is read through ([`Profile::state_on_disk`]).
    Small,
}

impl Profile {
    /// What memory goes to: (memtable, the `blocks` family's memtable, all memtables, block cache), bytes.
    pub fn bytes(self) -> (usize, usize, usize, usize) {
        match self {
            Profile::Standard => (MEMTABLE_BYTES, BLOCKS_MEMTABLE_BYTES, MEMTABLES_TOTAL_BYTES, BLOCK_CACHE_BYTES),
            Profile::Small => (
                SMALL_MEMTABLE_BYTES,
                SMALL_BLOCKS_MEMTABLE_BYTES,
                SMALL_MEMTABLES_TOTAL_BYTES,
                SMALL_BLOCK_CACHE_BYTES,
            ),
        }
    }

    /// Whether the engine reads the ledger state through the store instead of holding it in memory: a home's
    /// memory must not grow with the state (some 200 bytes a pair, hundreds of thousands of pairs on a network of a
    /// thousand homes). A validator keeps it in memory: it executes every block first, and a read from memory is
    /// some ten times faster than one through RocksDB.
    pub fn state_on_disk(self) -> bool {
        self == Profile::Small
    }
}

/// A column family's options: LZ4, bounded memtables, the shared block cache (issue 28, item 7); a bloom filter on the
/// state; on a home, the tables' index and filter blocks in the block cache.
fn family_options(name: &str, cache: &rocksdb::Cache, profile: Profile) -> rocksdb::Options {
    let (memtable, blocks_memtable, _, _) = profile.bytes();
    let mut options = rocksdb::Options::default();
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    options.set_write_buffer_size(if name == CF_BLOCKS { blocks_memtable } else { memtable });
    options.set_max_write_buffer_number(MEMTABLES_PER_FAMILY_MAX);
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Point reads of the state (a home reads its state through RocksDB, and most replay checks ask for a key that is
    // absent) skip the tables that cannot hold the key.
    if name == CF_STATE {
        table.set_bloom_filter(10.0, false);
    }
    // On a home, the tables' index and filter blocks take their room in the block cache, within its bound, rather
    // than memory that grows with the database (some 25 bytes per 4 KiB block of a day's blocks).
    if profile == Profile::Small {
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    }
    options.set_block_based_table_factory(&table);
    options
}

/// The format recorded in the database at `path` (1 when none is: a database made before formats were recorded),
/// read without changing anything; `None` when there is no database there yet.
fn stored_format(path: &Path) -> anyhow::Result<Option<u64>> {
    let options = rocksdb::Options::default();
    // No database yet (RocksDB's `CURRENT` names the live manifest): nothing to read. Any other failure to read one
    // is an error, never taken for "new" (which would write a format over whatever is there).
    if !path.join("CURRENT").exists() {
        return Ok(None);
    }
    // Every family the database has, whatever kos made it: a newer one may have families this kos does not know.
    let families = rocksdb::DB::list_cf(&options, path)
        .with_context(|| format!("reading the column families of the ledger database in {}", path.display()))?;
    let db = rocksdb::DB::open_cf_for_read_only(&options, path, &families, false)
        .with_context(|| format!("opening the ledger database in {} to read its format", path.display()))?;
    Ok(Some(match db.get(META_FORMAT)? {
        Some(bytes) => read_u64(&bytes).context("the ledger database's format")?,
        None => 1,
    }))
}

/// Refuses a database of a format this kos cannot read.
fn check_format(path: &Path, format: u64) -> anyhow::Result<()> {
    if format == 0 {
        anyhow::bail!("the ledger database in {} records format 0, which no kos writes: it is damaged", path.display());
    }
    if format > FORMAT {
        anyhow::bail!(
            "the ledger database in {} has format {format}, written by a newer kos; this kos reads formats up to \
             {FORMAT}. Install the newer kos again (kos never converts a database back to an older format), or move \
             the directory aside to sync the ledger from scratch",
            path.display()
        );
    }
    Ok(())
}

/// RocksDB storage: column families `blocks` (height → [block, certificate]), `events` (height → the block's
/// events), `state`, `index` (entry id → height, position) and `wal` (sequence → record), plus tip and WAL height
/// in the default family. A database an older kos made gets `events` when opened (its blocks have none).
pub struct RocksStore {
    db: Arc<rocksdb::DB>,
    wal_height: u64,
    wal_next: u64,
    wal_buffer: rocksdb::WriteBatch,
    /// Pruning (issue 28, item 3): keep only the last this many blocks (their events and index entries); the state
    /// is always whole. `None`: an archive, every block kept.
    keep_blocks: Option<u64>,
    /// Whether the engine reads the state through this store ([`Store::backing`]).
    state_on_disk: bool,
}

fn be(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

fn read_u64(bytes: &[u8]) -> anyhow::Result<u64> {
    Ok(u64::from_be_bytes(bytes.try_into().context("stored number is not 8 bytes")?))
}

impl RocksStore {
    /// Opens (or creates) the store in `path`, migrating an older format (see [`FORMAT`]) and refusing a newer one,
    /// with the [`Profile::Standard`] memory.
    pub fn open(path: &Path) -> anyhow::Result<RocksStore> {
        RocksStore::open_with(path, Profile::Standard)
    }

    /// [`RocksStore::open`] with the memory of `profile`.
    pub fn open_with(path: &Path, profile: Profile) -> anyhow::Result<RocksStore> {
        let (_, _, memtables_total, block_cache) = profile.bytes();
        let format = stored_format(path)?;
        if let Some(format) = format {
            check_format(path, format)?;
        }
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_max_open_files(256);
        // The database's own limit on all memtables together; each family gets its options below (`open_cf` would
        // give every family RocksDB's defaults, whatever `options` says).
        options.set_db_write_buffer_size(memtables_total);
        // A flush or compaction writes through a buffer of this size (RocksDB's default is 1 MiB, which a home's
        // heap profile showed at 1.9 MB while its memtables flushed).
        if profile == Profile::Small {
            options.set_writable_file_max_buffer_size(SMALL_WRITE_BUFFER_BYTES);
        }
        let cache = rocksdb::Cache::new_lru_cache(block_cache);
        let families = std::iter::once("default")
            .chain(FAMILIES)
            .map(|name| rocksdb::ColumnFamilyDescriptor::new(name, family_options(name, &cache, profile)));
        let mut db = rocksdb::DB::open_cf_descriptors(&options, path, families)
            .with_context(|| format!("opening the ledger database in {}", path.display()))?;
        if let Some(height) = db.get(META_RESTORING)? {
            // A state sync stopped before it finished: its part of a state goes, and the node starts afresh.
            db.drop_cf(CF_STATE).context("dropping a state sync's unfinished state")?;
            db.create_cf(CF_STATE, &family_options(CF_STATE, &cache, profile))?;
            db.delete_opt(META_RESTORING, &RocksStore::synced())?;
            tracing::warn!(height = read_u64(&height).unwrap_or(0), "a state sync did not finish: its state is gone");
        }
        let wal_height = match db.get(META_WAL_HEIGHT)? {
            Some(bytes) => read_u64(&bytes)?,
            None => 0,
        };
        let wal_cf = db.cf_handle(CF_WAL).context("wal column family")?;
        let wal_next = match db.iterator_cf(wal_cf, rocksdb::IteratorMode::End).next() {
            Some(item) => read_u64(&item?.0)? + 1,
            None => 0,
        };
        // A new database, or format 1 (whose `events` family the open just created): record the format.
        if format != Some(FORMAT) {
            let mut batch = rocksdb::WriteBatch::default();
            batch.put(META_FORMAT, be(FORMAT));
            // Before format 3 no change of the validator set was recorded: the record starts after the tip.
            if format.is_some() {
                batch.put(META_CHANGES_FROM, be(rocks_tip(&db)? + 1));
            }
            db.write_opt(batch, &RocksStore::synced())?;
            if let Some(old) = format {
                tracing::info!(path = %path.display(), from = old, to = FORMAT, "migrated the ledger database");
            }
        }
        Ok(RocksStore {
            db: Arc::new(db),
            wal_height,
            wal_next,
            wal_buffer: rocksdb::WriteBatch::default(),
            keep_blocks: None,
            state_on_disk: profile.state_on_disk(),
        })
    }

    /// Opens a store read-only (also while a node has it open): for export and verification.
    pub fn open_read_only(path: &Path) -> anyhow::Result<RocksReader> {
        if let Some(format) = stored_format(path)? {
            check_format(path, format)?;
        }
        let options = rocksdb::Options::default();
        // A database an older kos wrote has no `events` family, and a read-only open cannot create it.
        let existing = rocksdb::DB::list_cf(&options, path).unwrap_or_default();
        let families = FAMILIES.into_iter().filter(|name| existing.is_empty() || existing.iter().any(|cf| cf == name));
        let db = rocksdb::DB::open_cf_for_read_only(&options, path, families, false)
            .with_context(|| format!("opening the ledger database in {} to read", path.display()))?;
        Ok(RocksReader { db: Arc::new(db) })
    }

    /// Prunes from now on: each commit deletes the blocks (with their events and index entries) older than the last
    /// `keep` (at least [`KEEP_BLOCKS_MIN`]), at most [`PRUNE_PER_COMMIT_MAX`] heights at a time, in the commit's own
    /// write. `None` keeps every block from now on (blocks pruned already stay pruned).
    pub fn set_keep_blocks(&mut self, keep: Option<u64>) {
        self.keep_blocks = keep.map(|keep| keep.max(KEEP_BLOCKS_MIN));
    }

    /// The lowest height whose block the store keeps (1 when nothing was pruned).
    pub fn first(&self) -> anyhow::Result<u64> {
        rocks_first(&self.db)
    }

    /// Adds to `batch` the deletion of the blocks a commit of `height` leaves beyond the ones to keep.
    fn prune(&self, batch: &mut rocksdb::WriteBatch, height: u64) -> anyhow::Result<()> {
        let Some(keep) = self.keep_blocks else { return Ok(()) };
        let Ok(first) = rocks_first(&self.db) else { return Ok(()) };
        let wanted = height.saturating_sub(keep).saturating_add(1);
        let until = wanted.min(first.saturating_add(PRUNE_PER_COMMIT_MAX));
        if until <= first {
            return Ok(());
        }
        let (blocks, events, index) = (self.cf(CF_BLOCKS)?, self.cf(CF_EVENTS)?, self.cf(CF_INDEX)?);
        for pruned in first..until {
            // A block that cannot be read or decoded (damaged on disk) leaves its index entries, which then name a
            // pruned height: pruning never fails a commit.
            let block = match rocks_block(&self.db, pruned) {
                Ok(stored) => stored.and_then(|stored| crate::Block::from_bytes(&stored.block).ok()),
                Err(error) => {
                    tracing::warn!(
                        height = pruned,
                        "{error:#}: pruning a block it cannot read; its index entries stay"
                    );
                    None
                }
            };
            for entry in block.iter().flat_map(crate::Block::entries) {
                if let Ok(envelope) = protocol::Envelope::from_bytes(entry) {
                    batch.delete_cf(index, envelope.id().as_bytes());
                }
            }
        }
        batch.delete_range_cf(blocks, be(first), be(until));
        batch.delete_range_cf(events, be(first), be(until));
        batch.put(META_FIRST, be(until));
        Ok(())
    }

    /// A read-only view of the committed blocks and the entry index that other threads can use (to serve sync
    /// requests and queries) while the engine writes.
    pub fn reader(&self) -> RocksReader {
        RocksReader { db: self.db.clone() }
    }

    fn cf(&self, name: &str) -> anyhow::Result<&rocksdb::ColumnFamily> {
        self.db.cf_handle(name).with_context(|| format!("column family {name}"))
    }

    fn synced() -> rocksdb::WriteOptions {
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        options
    }

    fn clear_wal(&mut self, batch: &mut rocksdb::WriteBatch, height: u64) -> anyhow::Result<()> {
        let wal = self.cf(CF_WAL)?;
        batch.delete_range_cf(wal, be(0), be(u64::MAX));
        batch.put(META_WAL_HEIGHT, be(height));
        self.wal_buffer = rocksdb::WriteBatch::default();
        self.wal_next = 0;
        self.wal_height = height;
        Ok(())
    }
}

/// Most changes of the validator set one [`RocksReader::changes`] returns.
pub const CHANGES_PER_READ_MAX: usize = 64;

type ChangeWire = (serde_bytes::ByteBuf, serde_bytes::ByteBuf, Vec<(protocol::PublicKey, u64)>);

impl Change {
    /// `[header bstr, certificate bstr, [[key, power], ...]]`.
    pub fn to_bytes(&self) -> Vec<u8> {
        protocol::codec::encode(&(
            serde_bytes::Bytes::new(&self.header),
            serde_bytes::Bytes::new(&self.certificate),
            &self.validators,
        ))
    }

    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Change> {
        let (header, certificate, validators): ChangeWire =
            protocol::codec::decode_with(bytes, 256 * 1024, crate::genesis::VALIDATORS_MAX as u64)
                .context("a change of validators")?;
        Ok(Change { header: header.into_vec(), certificate: certificate.into_vec(), validators })
    }
}

impl RocksStore {
    /// Starts writing the state of a snapshot of `height` (state sync, PROTOCOL.md §9). A store with blocks (a node
    /// far behind) is emptied first: its blocks, events, index, state, consensus log and record of validator changes
    /// go, in the same synced write as the mark that a state sync is under way, so that a crash leaves either the
    /// old ledger or an empty one. Until [`RocksStore::restore_finish`], an open throws the state written so far
    /// away and the store is empty.
    pub fn restore_begin(&mut self, height: u64) -> anyhow::Result<()> {
        let tip = rocks_tip(&self.db)?;
        anyhow::ensure!(height > tip, "a state sync of block {height} would take the ledger back from block {tip}");
        let mut batch = rocksdb::WriteBatch::default();
        batch.put(META_RESTORING, be(height));
        for family in FAMILIES {
            self.empty_family(&mut batch, family)?;
        }
        for key in [META_TIP, META_FIRST, META_CHANGES_FROM, META_SUMMARY, META_RESTORED] {
            batch.delete(key);
        }
        self.clear_wal(&mut batch, 0)?;
        self.db.write_opt(batch, &RocksStore::synced()).context("starting a state sync")?;
        Ok(())
    }

    /// Adds to `batch` the deletion of every key of `family` (a range from its first key to its last, and the last):
    /// two seeks, whatever the family holds.
    fn empty_family(&self, batch: &mut rocksdb::WriteBatch, family: &str) -> anyhow::Result<()> {
        let cf = self.cf(family)?;
        let first = self.db.iterator_cf(cf, rocksdb::IteratorMode::Start).next().transpose()?;
        let last = self.db.iterator_cf(cf, rocksdb::IteratorMode::End).next().transpose()?;
        if let (Some((first, _)), Some((last, _))) = (first, last) {
            batch.delete_range_cf(cf, &first, &last);
            batch.delete_cf(cf, &last);
        }
        Ok(())
    }

    /// Writes verified pairs of the snapshot (not synced: the finishing write makes them durable, and a crash
    /// before it throws them away).
    pub fn restore_pairs(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) -> anyhow::Result<()> {
        anyhow::ensure!(self.db.get(META_RESTORING)?.is_some(), "no state sync is under way");
        let state = self.cf(CF_STATE)?;
        let mut batch = rocksdb::WriteBatch::default();
        for (key, value) in pairs {
            batch.put_cf(state, key, value);
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Gives a state sync up: what it wrote of the state goes, and the store is empty again.
    pub fn restore_abandon(&mut self) -> anyhow::Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        self.empty_family(&mut batch, CF_STATE)?;
        batch.delete(META_RESTORING);
        self.db.write_opt(batch, &RocksStore::synced()).context("giving a state sync up")?;
        Ok(())
    }

    /// Ends a state sync in one synced write: the snapshot's block (its tip and the first block it keeps), the
    /// changes of the validator set it traced — a record complete from height 1 when `complete` (no change was
    /// skipped), else only from the next block on — and the end of the restoring mark.
    pub fn restore_finish(
        &mut self,
        height: u64,
        stored: &Stored,
        changes: &[(u64, Change)],
        complete: bool,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.db.get(META_RESTORING)?.map(|bytes| read_u64(&bytes)).transpose()? == Some(height),
            "no state sync of block {height} is under way"
        );
        let mut batch = rocksdb::WriteBatch::default();
        let record = serde_cbor::to_vec(&(
            serde_bytes::Bytes::new(&stored.block),
            serde_bytes::Bytes::new(&stored.certificate),
        ))?;
        batch.put_cf(self.cf(CF_BLOCKS)?, be(height), record);
        // Its events are not known here (the block was not executed): none, so that followers read it as empty.
        batch.put_cf(self.cf(CF_EVENTS)?, be(height), serde_cbor::to_vec(&Vec::<Event>::new())?);
        let family = self.cf(CF_CHANGES)?;
        for (at, change) in changes {
            batch.put_cf(family, be(*at), change.to_bytes());
        }
        batch.put(META_CHANGES_FROM, be(if complete { 1 } else { height + 1 }));
        batch.put(META_TIP, be(height));
        batch.put(META_FIRST, be(height));
        batch.put(META_RESTORED, be(height));
        batch.delete(META_RESTORING);
        self.clear_wal(&mut batch, height + 1)?;
        self.db.write_opt(batch, &RocksStore::synced()).context("finishing a state sync")?;
        Ok(())
    }
}

/// Reads of a RocksDB store shared between threads (see [`RocksStore::reader`]).
#[derive(Clone)]
pub struct RocksReader {
    db: Arc<rocksdb::DB>,
}

fn rocks_first(db: &rocksdb::DB) -> anyhow::Result<u64> {
    match db.get(META_FIRST)? {
        Some(bytes) => read_u64(&bytes),
        None => Ok(1),
    }
}

/// [`META_SUMMARY`], read through `get` (the database, or a snapshot of it).
fn read_summary(
    get: impl FnOnce(&[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error>,
) -> anyhow::Result<Option<(u64, crate::state::Lattice, u64)>> {
    let Some(bytes) = get(META_SUMMARY)? else { return Ok(None) };
    anyhow::ensure!(bytes.len() == 16 + crate::state::LATTICE_BYTES, "the state's summary is {} bytes", bytes.len());
    let lattice = crate::state::Lattice::from_bytes(&bytes[16..]).context("the state's summary")?;
    Ok(Some((read_u64(&bytes[..8])?, lattice, read_u64(&bytes[8..16])?)))
}

fn rocks_summary(db: &rocksdb::DB) -> anyhow::Result<Option<(u64, crate::state::Lattice, u64)>> {
    read_summary(|key| db.get(key))
}

fn rocks_tip(db: &rocksdb::DB) -> anyhow::Result<u64> {
    match db.get(META_TIP)? {
        Some(bytes) => read_u64(&bytes),
        None => Ok(0),
    }
}

fn rocks_block(db: &rocksdb::DB, height: u64) -> anyhow::Result<Option<Stored>> {
    let cf = db.cf_handle(CF_BLOCKS).context("column family blocks")?;
    let Some(bytes) = db.get_cf(cf, be(height))? else { return Ok(None) };
    let (block, certificate): (serde_bytes::ByteBuf, serde_bytes::ByteBuf) =
        serde_cbor::from_slice(&bytes).context("stored block record")?;
    Ok(Some(Stored { block: block.into_vec(), certificate: certificate.into_vec() }))
}

fn rocks_events(db: &rocksdb::DB, height: u64) -> anyhow::Result<Option<Vec<Event>>> {
    let Some(cf) = db.cf_handle(CF_EVENTS) else { return Ok(None) };
    let Some(bytes) = db.get_cf(cf, be(height))? else { return Ok(None) };
    Ok(Some(serde_cbor::from_slice(&bytes).context("stored block events")?))
}

fn rocks_locate(db: &rocksdb::DB, id: &Id) -> anyhow::Result<Option<(u64, u32)>> {
    let cf = db.cf_handle(CF_INDEX).context("column family index")?;
    let Some(bytes) = db.get_cf(cf, id.as_bytes())? else { return Ok(None) };
    let height = read_u64(bytes.get(..8).context("index record")?)?;
    let position = u32::from_be_bytes(bytes.get(8..12).context("index record")?.try_into()?);
    Ok(Some((height, position)))
}

/// The size of one column family of the ledger database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilySize {
    pub name: &'static str,
    /// Bytes in SST files.
    pub sst_bytes: u64,
    /// RocksDB's estimate of the live data, bytes.
    pub live_bytes: u64,
    /// Bytes in memtables (not yet flushed).
    pub memtable_bytes: u64,
    /// Memory held by the readers of its SST files (their indexes and filters) outside the block cache.
    pub table_readers_bytes: u64,
}

impl RocksReader {
    /// The size of each column family (RocksDB's properties; 0 where one is not available).
    pub fn sizes(&self) -> Vec<FamilySize> {
        let property = |cf: &rocksdb::ColumnFamily, name: &str| -> u64 {
            self.db.property_int_value_cf(cf, name).ok().flatten().unwrap_or(0)
        };
        std::iter::once("default")
            .chain(FAMILIES)
            .filter_map(|name| {
                let cf = self.db.cf_handle(name)?;
                Some(FamilySize {
                    name,
                    sst_bytes: property(cf, "rocksdb.total-sst-files-size"),
                    live_bytes: property(cf, "rocksdb.estimate-live-data-size"),
                    memtable_bytes: property(cf, "rocksdb.cur-size-all-mem-tables"),
                    table_readers_bytes: property(cf, "rocksdb.estimate-table-readers-mem"),
                })
            })
            .collect()
    }

    /// What the block cache the families share holds now, bytes (data blocks, and on a home the tables' index and
    /// filter blocks); 0 where RocksDB does not say.
    pub fn block_cache_bytes(&self) -> u64 {
        self.db.property_int_value("rocksdb.block-cache-usage").ok().flatten().unwrap_or(0)
    }

    /// The height of the last committed block.
    pub fn tip(&self) -> anyhow::Result<u64> {
        rocks_tip(&self.db)
    }

    /// The lowest height whose block the store keeps (1 when nothing was pruned).
    pub fn first(&self) -> anyhow::Result<u64> {
        rocks_first(&self.db)
    }

    pub fn block(&self, height: u64) -> anyhow::Result<Option<Stored>> {
        rocks_block(&self.db, height)
    }

    /// What the block at `height` did (see [`Outcome`]).
    pub fn events(&self, height: u64) -> anyhow::Result<Option<Vec<Event>>> {
        rocks_events(&self.db, height)
    }

    /// Where a committed entry is: (height, position in the block).
    pub fn locate(&self, id: &Id) -> anyhow::Result<Option<(u64, u32)>> {
        rocks_locate(&self.db, id)
    }

    /// The recorded changes of the validator set at heights after `after` and at most `upto`, in height order, at
    /// most [`CHANGES_PER_READ_MAX`]; `None` when the record does not reach back to `after + 1` (a database
    /// migrated from format 2 records changes from its migration on).
    pub fn changes(&self, after: u64, upto: u64) -> anyhow::Result<Option<Vec<(u64, Change)>>> {
        let from = match self.db.get(META_CHANGES_FROM)? {
            Some(bytes) => read_u64(&bytes)?,
            None => 1,
        };
        if after.saturating_add(1) < from {
            return Ok(None);
        }
        let Some(family) = self.db.cf_handle(CF_CHANGES) else { return Ok(None) };
        let start = be(after.saturating_add(1));
        let mut changes = Vec::new();
        for item in self.db.iterator_cf(family, rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward)) {
            let (key, value) = item?;
            let height = read_u64(&key)?;
            if height > upto || changes.len() >= CHANGES_PER_READ_MAX {
                break;
            }
            changes.push((height, Change::from_bytes(&value)?));
        }
        Ok(Some(changes))
    }

    /// The height of the snapshot the ledger was last restored from by a state sync, if it was.
    pub fn restored(&self) -> anyhow::Result<Option<u64>> {
        self.db.get(META_RESTORED)?.map(|bytes| read_u64(&bytes)).transpose()
    }

    /// Certified blocks from `from` on (see [`blocks_from`]).
    pub fn blocks_from(&self, from: u64, max: usize, bytes_max: usize) -> Vec<Stored> {
        blocks_from(|height| self.block(height), from, max, bytes_max)
    }

    /// Checks the state against the summary kept with it (a restart trusts the summary, and checks the pairs after
    /// it started, here): from one RocksDB snapshot, the lattice of every pair of the state must be the summary's,
    /// their number its count, and the summary's root the state root of its block's header. `Ok(None)`: nothing
    /// checked — the store keeps no summary of its tip (none, or one an older kos left behind at an earlier height),
    /// or `cancel` was set (the check looks at it between batches); `Ok(Some(height))`: the state of `height` checks
    /// out. Reads in batches of [`crate::state::LATTICE_BATCH`] pairs, hashed on several threads, without filling
    /// the block cache.
    pub fn verify_state(&self, cancel: &std::sync::atomic::AtomicBool) -> anyhow::Result<Option<u64>> {
        let family = self.db.cf_handle(CF_STATE).context("column family state")?;
        let snapshot = self.db.snapshot();
        let Some((height, expected, count)) = read_summary(|key| snapshot.get(key))? else { return Ok(None) };
        let tip = match snapshot.get(META_TIP)? {
            Some(bytes) => read_u64(&bytes)?,
            None => 0,
        };
        if height != tip {
            return Ok(None);
        }
        let blocks = self.db.cf_handle(CF_BLOCKS).context("column family blocks")?;
        let record = snapshot
            .get_cf(blocks, be(height))?
            .with_context(|| format!("block {height}, whose state is summarized, is not in the store"))?;
        let (block, _): (serde_bytes::ByteBuf, serde_bytes::ByteBuf) =
            serde_cbor::from_slice(&record).context("stored block record")?;
        let block = crate::Block::from_bytes(&block).context("the summarized block")?;
        anyhow::ensure!(
            expected.root() == block.header().state_root,
            "the state's summary of block {height} does not match the block's state root: the ledger database is \
             damaged"
        );
        let mut lattice = crate::state::Lattice::default();
        let mut pairs = 0u64;
        let mut batch = Vec::with_capacity(crate::state::LATTICE_BATCH);
        let mut options = rocksdb::ReadOptions::default();
        options.fill_cache(false);
        for item in snapshot.iterator_cf_opt(family, options, rocksdb::IteratorMode::Start) {
            batch.push(item.context("reading the state")?);
            pairs += 1;
            if batch.len() == crate::state::LATTICE_BATCH {
                if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(None);
                }
                lattice.absorb(&crate::state::Lattice::of(&batch));
                batch.clear();
            }
        }
        lattice.absorb(&crate::state::Lattice::of(&batch));
        anyhow::ensure!(
            lattice == expected && pairs == count,
            "the state of block {height} ({pairs} pairs) does not add up to its state root ({count} pairs): the \
             ledger database is damaged"
        );
        Ok(Some(height))
    }

    /// The state as of the last commit, with its height, read from a RocksDB snapshot: a commit writes a block's
    /// state, events and the tip in one batch, so the snapshot holds exactly one block's outcome, and later commits
    /// do not change it. Reads of it run on the caller's thread; the ledger thread is not involved.
    /// Before block 1 (which writes the genesis pairs too) the store holds no state: the snapshot is then the
    /// genesis state.
    pub fn snapshot<'a>(&'a self, genesis: &'a Arc<Genesis>) -> anyhow::Result<StateSnapshot<'a>> {
        let family = self.db.cf_handle(CF_STATE).context("column family state")?;
        let snapshot = self.db.snapshot();
        let height = match snapshot.get(META_TIP)? {
            Some(bytes) => read_u64(&bytes)?,
            None => 0,
        };
        let before_block_1 = (height == 0).then(|| crate::State::genesis(genesis.clone()));
        Ok(StateSnapshot { snapshot, family, genesis, height, before_block_1, failure: std::cell::RefCell::new(None) })
    }
}

/// The committed state at one height, read from RocksDB (see [`RocksReader::snapshot`]). A read that fails (a
/// damaged or unreadable database) reads as absent and is remembered: [`StateSnapshot::check`] reports it, so an
/// answer built from a failed read is never given as true.
pub struct StateSnapshot<'a> {
    snapshot: rocksdb::SnapshotWithThreadMode<'a, rocksdb::DB>,
    family: &'a rocksdb::ColumnFamily,
    genesis: &'a Genesis,
    height: u64,
    /// The genesis state, at height 0.
    before_block_1: Option<crate::State>,
    failure: std::cell::RefCell<Option<rocksdb::Error>>,
}

impl StateSnapshot<'_> {
    /// The height of the block whose state this is.
    pub fn height(&self) -> u64 {
        self.height
    }

    /// Whether every read so far succeeded; the first failure otherwise.
    pub fn check(&self) -> anyhow::Result<()> {
        match self.failure.borrow().as_ref() {
            Some(error) => Err(anyhow::anyhow!("reading the ledger's state: {error}")),
            None => Ok(()),
        }
    }

    fn failed(&self, error: rocksdb::Error) {
        self.failure.borrow_mut().get_or_insert(error);
    }

    /// Every pair of the state, in key order (a failed read ends it; see [`StateSnapshot::check`]).
    pub fn all(&self) -> crate::state::Pairs<'_> {
        if let Some(state) = &self.before_block_1 {
            return state.pairs();
        }
        // A whole-state read (a snapshot written, an export) passes once over every block: it does not push the
        // blocks the ledger reads again and again out of the block cache.
        let mut options = rocksdb::ReadOptions::default();
        options.fill_cache(false);
        let items = self.snapshot.iterator_cf_opt(self.family, options, rocksdb::IteratorMode::Start);
        Box::new(items.map_while(move |item| match item {
            Ok((key, value)) => Some((Cow::Owned(key.into_vec()), Cow::Owned(value.into_vec()))),
            Err(error) => {
                self.failed(error);
                None
            }
        }))
    }
}

impl Kv for StateSnapshot<'_> {
    fn genesis(&self) -> &Genesis {
        self.genesis
    }

    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        if let Some(state) = &self.before_block_1 {
            return state.get(key);
        }
        match self.snapshot.get_cf(self.family, key) {
            Ok(value) => value.map(Cow::Owned),
            Err(error) => {
                self.failed(error);
                None
            }
        }
    }

    fn range<'b>(&'b self, start: &[u8], end: &[u8]) -> crate::state::Pairs<'b> {
        if let Some(state) = &self.before_block_1 {
            return state.range(start, end);
        }
        if start >= end {
            return Box::new(std::iter::empty());
        }
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(end);
        let items = self.snapshot.iterator_cf_opt(
            self.family,
            options,
            rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward),
        );
        Box::new(items.map_while(move |item| match item {
            Ok((key, value)) => Some((Cow::Owned(key.into_vec()), Cow::Owned(value.into_vec()))),
            Err(error) => {
                self.failed(error);
                None
            }
        }))
    }
}

/// The live `state` family, read through by a home's ledger state ([`crate::state::Backing`]). Only the ledger
/// thread commits, and it reads between its commits, so the family then holds exactly the committed state.
struct RocksBacking {
    db: Arc<rocksdb::DB>,
    failure: Mutex<Option<String>>,
}

impl std::fmt::Debug for RocksBacking {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RocksBacking")
            .field("failure", &crate::state::Backing::failure(self))
            .finish_non_exhaustive()
    }
}

impl RocksBacking {
    fn failed(&self, error: impl std::fmt::Display) {
        let mut failure = self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failure.get_or_insert_with(|| format!("reading the ledger's state: {error}"));
    }
}

impl crate::state::Backing for RocksBacking {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let Some(family) = self.db.cf_handle(CF_STATE) else {
            self.failed("the database has no state column family");
            return None;
        };
        match self.db.get_cf(family, key) {
            Ok(value) => value,
            Err(error) => {
                self.failed(error);
                None
            }
        }
    }

    fn range<'a>(&'a self, start: &[u8], end: &[u8]) -> crate::state::Pairs<'a> {
        if start >= end {
            return Box::new(std::iter::empty());
        }
        let Some(family) = self.db.cf_handle(CF_STATE) else {
            self.failed("the database has no state column family");
            return Box::new(std::iter::empty());
        };
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(end);
        let items =
            self.db.iterator_cf_opt(family, options, rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward));
        Box::new(items.map_while(move |item| match item {
            Ok((key, value)) => Some((Cow::Owned(key.into_vec()), Cow::Owned(value.into_vec()))),
            Err(error) => {
                self.failed(error);
                None
            }
        }))
    }

    fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Blocks from `from` on, in height order, at most `max`, stopping before their bytes pass `bytes_max` (but at
/// least one), or at the first height `block` has not (or fails to read).
pub fn blocks_from(
    block: impl Fn(u64) -> anyhow::Result<Option<Stored>>,
    from: u64,
    max: usize,
    bytes_max: usize,
) -> Vec<Stored> {
    let mut blocks = Vec::new();
    let mut bytes = 0;
    for height in from..from.saturating_add(max as u64) {
        match block(height) {
            Ok(Some(stored)) => {
                bytes += stored.block.len() + stored.certificate.len();
                if !blocks.is_empty() && bytes > bytes_max {
                    break;
                }
                blocks.push(stored);
            }
            _ => break,
        }
    }
    blocks
}

impl Store for RocksStore {
    fn tip(&self) -> anyhow::Result<u64> {
        rocks_tip(&self.db)
    }

    fn backing(&self) -> Option<Arc<dyn crate::state::Backing>> {
        self.state_on_disk.then(|| -> Arc<dyn crate::state::Backing> {
            Arc::new(RocksBacking { db: self.db.clone(), failure: Mutex::new(None) })
        })
    }

    fn block(&self, height: u64) -> anyhow::Result<Option<Stored>> {
        rocks_block(&self.db, height)
    }

    fn state(&self) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut pairs = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_STATE)?, rocksdb::IteratorMode::Start) {
            let (key, value) = item?;
            pairs.push((key.into_vec(), value.into_vec()));
        }
        Ok(pairs)
    }

    fn locate(&self, id: &Id) -> anyhow::Result<Option<(u64, u32)>> {
        rocks_locate(&self.db, id)
    }

    fn events(&self, height: u64) -> anyhow::Result<Option<Vec<Event>>> {
        rocks_events(&self.db, height)
    }

    fn commit(&mut self, height: u64, stored: &Stored, writes: &Writes, outcome: &Outcome) -> anyhow::Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        let record = serde_cbor::to_vec(&(
            serde_bytes::Bytes::new(&stored.block),
            serde_bytes::Bytes::new(&stored.certificate),
        ))?;
        batch.put_cf(self.cf(CF_BLOCKS)?, be(height), record);
        batch.put_cf(self.cf(CF_EVENTS)?, be(height), serde_cbor::to_vec(&outcome.events)?);
        let state = self.cf(CF_STATE)?;
        for (key, value) in writes {
            match value {
                Some(value) => batch.put_cf(state, key, value),
                None => batch.delete_cf(state, key),
            }
        }
        let index = self.cf(CF_INDEX)?;
        for (position, id) in outcome.entry_ids.iter().enumerate() {
            let mut location = be(height).to_vec();
            location.extend_from_slice(&u32::try_from(position).unwrap_or(u32::MAX).to_be_bytes());
            batch.put_cf(index, id.as_bytes(), location);
        }
        if let Some(validators) = &outcome.validators {
            let block = crate::Block::from_bytes(&stored.block).context("the block of a change of validators")?;
            let change = Change {
                header: protocol::codec::encode(block.header()),
                certificate: stored.certificate.clone(),
                validators: validators.clone(),
            };
            batch.put_cf(self.cf(CF_CHANGES)?, be(height), change.to_bytes());
        }
        match &outcome.summary {
            Some((lattice, pairs)) => {
                batch.put(META_SUMMARY, [&be(height)[..], &be(*pairs), &lattice.to_bytes()].concat())
            }
            None => batch.delete(META_SUMMARY),
        }
        batch.put(META_TIP, be(height));
        self.prune(&mut batch, height)?;
        self.clear_wal(&mut batch, height + 1)?;
        self.db.write_opt(batch, &RocksStore::synced()).context("writing a committed block")?;
        Ok(())
    }

    fn wal_append(&mut self, height: u64, record: Vec<u8>) -> anyhow::Result<()> {
        if height != self.wal_height {
            let mut batch = rocksdb::WriteBatch::default();
            self.clear_wal(&mut batch, height)?;
            self.db.write_opt(batch, &RocksStore::synced())?;
        }
        let wal = self.db.cf_handle(CF_WAL).context("column family wal")?;
        self.wal_buffer.put_cf(wal, be(self.wal_next), record);
        self.wal_next += 1;
        Ok(())
    }

    fn wal_sync(&mut self) -> anyhow::Result<()> {
        if self.wal_buffer.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.wal_buffer);
        self.db.write_opt(batch, &RocksStore::synced()).context("syncing the consensus WAL")?;
        Ok(())
    }

    fn summary(&self) -> anyhow::Result<Option<(u64, crate::state::Lattice, u64)>> {
        rocks_summary(&self.db)
    }

    fn wal(&self, height: u64) -> anyhow::Result<Vec<Vec<u8>>> {
        // Nothing appended since the WAL was last cleared (or since opening, when `wal_next` counts what is on
        // disk): no read. This is every height's start in normal running, and the read is not cheap: the records of
        // earlier heights were deleted, but an iterator steps over their versions until RocksDB flushes them.
        if height != self.wal_height || self.wal_next == 0 {
            return Ok(Vec::new());
        }
        let mut records = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_WAL)?, rocksdb::IteratorMode::Start) {
            records.push(item?.1.into_vec());
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Block `height` holding one transfer, stored and committed as the engine does (with its entry's id indexed).
    fn commit_transfer(store: &mut RocksStore, height: u64) -> Id {
        commit_block(store, height, &Writes::new(), None)
    }

    /// Block `height` holding one transfer, with `writes` to the state and, when `validators` is set, a change of
    /// the validator set to it.
    fn commit_block(
        store: &mut RocksStore,
        height: u64,
        writes: &Writes,
        validators: Option<Vec<(protocol::PublicKey, u64)>>,
    ) -> Id {
        let body = protocol::Body::Transfer(protocol::message::Transfer {
            to: protocol::Keypair::from_seed(&[2; 32]).public(),
            token: protocol::types::TokenId::new("credit").unwrap(),
            amount: height,
            memo: protocol::types::Text::new("").unwrap(),
        });
        let draft = protocol::Draft {
            network: protocol::NetworkId::new("kos-test").unwrap(),
            nonce: height,
            created_ms: 0,
            expires_ms: 1,
            body,
        };
        let envelope = draft.sign(&protocol::Keypair::from_seed(&[1; 32]));
        let header = crate::block::Header {
            version: crate::block::BLOCK_VERSION,
            network: protocol::NetworkId::new("kos-test").unwrap(),
            height,
            time_ms: height,
            parent: crate::Hash([0; 32]),
            proposer: protocol::Keypair::from_seed(&[1; 32]).public(),
            entries_root: crate::Hash([0; 32]),
            entry_count: 0,
            state_root: crate::Hash([0; 32]),
            validators_hash: crate::Hash([0; 32]),
        };
        let block = crate::Block::new(header, vec![envelope.to_bytes()]);
        let stored = Stored { block: block.to_bytes(), certificate: vec![1] };
        let outcome = Outcome { entry_ids: vec![envelope.id()], events: Vec::new(), validators, summary: None };
        store.commit(height, &stored, writes, &outcome).unwrap();
        envelope.id()
    }

    /// Issue 28, item 3: a `full` store keeps exactly the last `keep` blocks (with their events and index entries),
    /// catches up on a long history at most 64 heights a commit, remembers where it keeps blocks from across a
    /// restart, and stops pruning when told to.
    #[test]
    fn a_pruning_store_keeps_the_last_blocks_and_forgets_the_older_ones_with_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(dir.path()).unwrap();
        // An archive's history first: 1,100 blocks, every one kept.
        let ids: Vec<Id> = (1..=1_100).map(|height| commit_transfer(&mut store, height)).collect();
        assert_eq!(store.first().unwrap(), 1);
        // Switched to full with 1,024 kept: 77 heights to prune, 64 at the next commit, the rest at the one after.
        store.set_keep_blocks(Some(10));
        let id_1101 = commit_transfer(&mut store, 1_101);
        assert_eq!(store.first().unwrap(), 65, "at most 64 heights a commit (the least kept is 1,024)");
        commit_transfer(&mut store, 1_102);
        assert_eq!(store.first().unwrap(), 1_102 - 1_024 + 1);
        let first = store.first().unwrap();
        let reader = store.reader();
        assert_eq!(reader.block(first - 1).unwrap(), None);
        assert_eq!(reader.events(first - 1).unwrap(), None);
        assert!(reader.block(first).unwrap().is_some());
        assert_eq!(reader.locate(&ids[usize::try_from(first).unwrap() - 2]).unwrap(), None, "the index forgets it");
        assert_eq!(reader.locate(&ids[usize::try_from(first).unwrap() - 1]).unwrap(), Some((first, 0)));
        assert_eq!(reader.locate(&id_1101).unwrap(), Some((1_101, 0)));
        // Where it keeps blocks from survives a restart; without pruning, nothing more goes.
        drop((store, reader));
        let mut store = RocksStore::open(dir.path()).unwrap();
        assert_eq!(store.first().unwrap(), first);
        store.set_keep_blocks(None);
        commit_transfer(&mut store, 1_103);
        assert_eq!(store.first().unwrap(), first);
        assert!(store.block(first).unwrap().is_some());
    }

    fn exercise(store: &mut dyn Store) {
        assert_eq!(store.tip().unwrap(), 0);
        store.wal_append(1, b"a".to_vec()).unwrap();
        store.wal_append(1, b"b".to_vec()).unwrap();
        store.wal_sync().unwrap();
        assert_eq!(store.wal(1).unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(store.wal(2).unwrap().is_empty());
        let mut writes = Writes::new();
        writes.insert(b"k1".to_vec(), Some(b"v1".to_vec()));
        writes.insert(b"k2".to_vec(), Some(b"v2".to_vec()));
        let stored = Stored { block: b"block-1".to_vec(), certificate: b"cert-1".to_vec() };
        let outcome = Outcome {
            entry_ids: vec![Id([5; 32])],
            events: vec![Event::BarterSettled { cycle: Id([5; 32]), legs: vec![(Id([6; 32]), 7)] }],
            validators: None,
            summary: None,
        };
        assert_eq!(store.events(1).unwrap(), None);
        store.commit(1, &stored, &writes, &outcome).unwrap();
        assert_eq!(store.events(1).unwrap(), Some(outcome.events), "a block's events are kept beside it");
        assert_eq!(store.tip().unwrap(), 1);
        assert_eq!(store.block(1).unwrap(), Some(stored));
        assert!(store.wal(1).unwrap().is_empty(), "a commit clears the WAL");
        assert_eq!(store.locate(&Id([5; 32])).unwrap(), Some((1, 0)));
        let mut writes = Writes::new();
        writes.insert(b"k1".to_vec(), None);
        store.commit(2, &Stored { block: vec![2], certificate: vec![2] }, &writes, &Outcome::default()).unwrap();
        assert_eq!(store.state().unwrap(), vec![(b"k2".to_vec(), b"v2".to_vec())]);
    }

    #[test]
    fn memory_store_behaves() {
        exercise(&mut MemoryStore::new());
    }

    #[test]
    fn memory_store_loses_unsynced_wal_in_a_crash() {
        let mut store = MemoryStore::new();
        store.wal_append(1, b"synced".to_vec()).unwrap();
        store.wal_sync().unwrap();
        store.wal_append(1, b"lost".to_vec()).unwrap();
        store.crash();
        assert_eq!(store.wal(1).unwrap(), vec![b"synced".to_vec()]);
    }

    #[test]
    fn rocks_store_behaves_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = RocksStore::open(dir.path()).unwrap();
            exercise(&mut store);
            store.wal_append(3, b"x".to_vec()).unwrap();
            store.wal_sync().unwrap();
            store.wal_append(3, b"unsynced".to_vec()).unwrap();
        }
        let store = RocksStore::open(dir.path()).unwrap();
        assert_eq!(store.tip().unwrap(), 2);
        assert_eq!(store.block(2).unwrap().unwrap().block, vec![2]);
        assert_eq!(store.wal(3).unwrap(), vec![b"x".to_vec()]);
        assert_eq!(store.state().unwrap(), vec![(b"k2".to_vec(), b"v2".to_vec())]);
    }

    #[test]
    fn a_database_an_older_kos_made_opens_and_has_no_events() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut options = rocksdb::Options::default();
            options.create_if_missing(true);
            options.create_missing_column_families(true);
            let db = rocksdb::DB::open_cf(&options, dir.path(), [CF_BLOCKS, CF_STATE, CF_INDEX, CF_WAL]).unwrap();
            let record = serde_cbor::to_vec(&(serde_bytes::Bytes::new(b"b"), serde_bytes::Bytes::new(b"c"))).unwrap();
            db.put_cf(db.cf_handle(CF_BLOCKS).unwrap(), be(1), record).unwrap();
            db.put(META_TIP, be(1)).unwrap();
        }
        let reader = RocksStore::open_read_only(dir.path()).unwrap();
        assert_eq!(reader.tip().unwrap(), 1);
        assert_eq!(reader.events(1).unwrap(), None);
        drop(reader);
        let store = RocksStore::open(dir.path()).unwrap();
        assert_eq!(store.block(1).unwrap().unwrap().block, b"b".to_vec());
        assert_eq!(store.events(1).unwrap(), None);
        // Format 1 (nothing recorded) was migrated: the format is recorded, and the next open finds it.
        assert_eq!(store.db.get(META_FORMAT).unwrap(), Some(be(FORMAT).to_vec()));
        drop(store);
        assert_eq!(stored_format(dir.path()).unwrap(), Some(FORMAT));
    }

    /// Every family has the options the store gives it, as RocksDB records them in the database's `OPTIONS` file:
    /// LZ4, bounded memtables. (`open_cf` gave every family RocksDB's defaults — 64 MiB memtables, no compression —
    /// whatever the options passed.)
    /// A home's profile gives it less memory (`SMALL_*`).
    #[test]
    fn every_family_has_its_options() {
        for profile in [Profile::Standard, Profile::Small] {
            let dir = tempfile::tempdir().unwrap();
            drop(RocksStore::open_with(dir.path(), profile).unwrap());
            let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with("OPTIONS-"))
                .collect();
            files.sort();
            let text = std::fs::read_to_string(files.last().expect("an OPTIONS file")).unwrap();
            let value = |section: &str, name: &str| {
                section.lines().find_map(|line| line.trim().strip_prefix(&format!("{name}="))).unwrap_or("").to_owned()
            };
            let (memtable, blocks_memtable, total, _) = profile.bytes();
            let db = text.split("[DBOptions]").nth(1).expect("DB options");
            assert_eq!(value(db, "db_write_buffer_size"), total.to_string(), "{profile:?}");
            let buffer = if profile == Profile::Small { SMALL_WRITE_BUFFER_BYTES } else { 1024 * 1024 };
            assert_eq!(value(db, "writable_file_max_buffer_size"), buffer.to_string(), "{profile:?}");
            for family in std::iter::once("default").chain(FAMILIES) {
                let section = text
                    .split("[CFOptions \"")
                    .find(|section| section.starts_with(&format!("{family}\"]")))
                    .unwrap_or_else(|| panic!("no options for {family}"));
                let memtable = if family == CF_BLOCKS { blocks_memtable } else { memtable };
                assert_eq!(value(section, "write_buffer_size"), memtable.to_string(), "{family} {profile:?}");
                let most = MEMTABLES_PER_FAMILY_MAX.to_string();
                assert_eq!(value(section, "max_write_buffer_number"), most, "{family} {profile:?}");
                assert_eq!(value(section, "compression"), "kLZ4Compression", "{family} {profile:?}");
                let table = text
                    .split(&format!("[TableOptions/BlockBasedTable \"{family}\"]"))
                    .nth(1)
                    .unwrap_or_else(|| panic!("no table options for {family}"));
                let cached = if profile == Profile::Small { "true" } else { "false" };
                assert_eq!(value(table, "cache_index_and_filter_blocks"), cached, "{family} {profile:?}");
                let filter = value(table, "filter_policy");
                assert_eq!(family == CF_STATE, filter.contains("bloomfilter"), "{family} {profile:?}: {filter}");
            }
        }
        assert_eq!(Profile::Small.bytes(), (256 << 10, 1 << 20, 1 << 20, 2 << 20));
    }

    /// The memtables are bounded: 48 MiB of blocks written end up on disk, not in memory (with RocksDB's defaults
    /// they all stayed in a 64 MiB memtable).
    #[test]
    fn the_memtables_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(dir.path()).unwrap();
        for height in 1..=48u64 {
            let stored = Stored { block: vec![u8::try_from(height % 256).unwrap(); 1 << 20], certificate: vec![1] };
            store.commit(height, &stored, &Writes::new(), &Outcome::default()).unwrap();
        }
        let reader = store.reader();
        let settled = (0..600).any(|_| {
            let memtables: u64 = reader.sizes().iter().map(|family| family.memtable_bytes).sum();
            if memtables <= (MEMTABLES_TOTAL_BYTES + BLOCKS_MEMTABLE_BYTES) as u64 {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            false
        });
        let sizes = reader.sizes();
        assert!(settled, "the memtables hold more than their bound: {sizes:?}");
        let blocks = sizes.iter().find(|family| family.name == CF_BLOCKS).unwrap();
        assert!(blocks.sst_bytes > 0, "the blocks were flushed to disk: {sizes:?}");
    }

    /// Issue 28, item 4: a database of format 2 (before the validator changes were recorded) migrates: it gains the
    /// `changes` family, and its record of changes starts after its tip, so it refuses older requests rather than
    /// answering them incompletely. Changes committed after the migration are recorded and served.
    #[test]
    fn a_database_of_format_2_migrates_and_records_changes_from_then_on() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut options = rocksdb::Options::default();
            options.create_if_missing(true);
            options.create_missing_column_families(true);
            let db =
                rocksdb::DB::open_cf(&options, dir.path(), [CF_BLOCKS, CF_EVENTS, CF_STATE, CF_INDEX, CF_WAL]).unwrap();
            db.put(META_FORMAT, be(2)).unwrap();
            db.put(META_TIP, be(5)).unwrap();
        }
        let mut store = RocksStore::open(dir.path()).unwrap();
        assert_eq!(store.db.get(META_FORMAT).unwrap(), Some(be(FORMAT).to_vec()));
        let reader = store.reader();
        assert_eq!(reader.changes(0, 100).unwrap(), None, "no record before the migration");
        assert_eq!(reader.changes(5, 100).unwrap(), Some(Vec::new()));
        // A change at height 6: the header, certificate and set are kept (and never pruned).
        let header = crate::block::Header {
            version: crate::block::BLOCK_VERSION,
            network: protocol::NetworkId::new("kos-test").unwrap(),
            height: 6,
            time_ms: 6,
            parent: crate::Hash([0; 32]),
            proposer: protocol::Keypair::from_seed(&[1; 32]).public(),
            entries_root: crate::Hash([0; 32]),
            entry_count: 0,
            state_root: crate::Hash([0; 32]),
            validators_hash: crate::Hash([7; 32]),
        };
        let block = crate::Block::new(header, Vec::new());
        let validators = vec![(protocol::Keypair::from_seed(&[1; 32]).public(), 3)];
        let outcome = Outcome { validators: Some(validators.clone()), ..Outcome::default() };
        store.commit(6, &Stored { block: block.to_bytes(), certificate: vec![9] }, &Writes::new(), &outcome).unwrap();
        store.commit(7, &Stored { block: vec![7], certificate: vec![7] }, &Writes::new(), &Outcome::default()).unwrap();
        let changes = reader.changes(5, 100).unwrap().unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].0, 6);
        assert_eq!(changes[0].1.header, protocol::codec::encode(block.header()));
        assert_eq!(changes[0].1.certificate, vec![9]);
        assert_eq!(changes[0].1.validators, validators);
        assert_eq!(reader.changes(6, 100).unwrap(), Some(Vec::new()));
        assert_eq!(reader.changes(5, 5).unwrap(), Some(Vec::new()), "only up to the height asked");
    }

    /// Issue 28, item 2: a state sync moves a ledger forward only; a crash before it finishes (the store
    /// dropped without the finishing write) leaves an empty ledger at the next open; a finished one has the
    /// snapshot's state, its block as tip and first kept block, and the changes it traced; one given up is empty.
    #[test]
    fn a_state_sync_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())];
        {
            let mut store = RocksStore::open(dir.path()).unwrap();
            store.restore_begin(40).unwrap();
            store.restore_pairs(&pairs).unwrap();
            // Crash: no finish.
        }
        let mut store = RocksStore::open(dir.path()).unwrap();
        assert_eq!(store.tip().unwrap(), 0);
        assert_eq!(store.state().unwrap(), Vec::new(), "the unfinished state is gone");
        assert!(store.restore_pairs(&pairs).is_err(), "no state sync is under way");
        store.restore_begin(40).unwrap();
        store.restore_pairs(&pairs).unwrap();
        store.restore_abandon().unwrap();
        assert_eq!(store.state().unwrap(), Vec::new());
        store.restore_begin(40).unwrap();
        store.restore_pairs(&pairs).unwrap();
        let stored = Stored { block: b"block-40".to_vec(), certificate: b"cert-40".to_vec() };
        let change = Change { header: vec![1], certificate: vec![2], validators: Vec::new() };
        assert!(store.restore_finish(41, &stored, &[], true).is_err(), "another height than begun");
        store.restore_finish(40, &stored, &[(12, change.clone())], true).unwrap();
        drop(store);
        let store = RocksStore::open(dir.path()).unwrap();
        assert_eq!(store.tip().unwrap(), 40);
        assert_eq!(store.first().unwrap(), 40);
        assert_eq!(store.block(40).unwrap(), Some(stored));
        assert_eq!(store.state().unwrap(), pairs);
        assert_eq!(store.reader().changes(0, 40).unwrap(), Some(vec![(12, change)]));
        assert_eq!(store.reader().restored().unwrap(), Some(40));
        let mut store = store;
        assert!(store.restore_begin(40).is_err(), "a state sync only moves a ledger forward");
        assert!(store.restore_begin(12).is_err(), "a state sync only moves a ledger forward");
        assert_eq!(store.tip().unwrap(), 40, "a refused state sync leaves the ledger as it was");
    }

    /// The state's summary kept with a block ([`Outcome::summary`]) is read back as that block's; the next commit
    /// without one forgets it, and so does a state sync, so that no summary outlives the state it summarized.
    #[test]
    fn a_summary_is_kept_with_its_block_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(dir.path()).unwrap();
        let mut lattice = crate::state::Lattice::default();
        lattice.add(b"k", b"v");
        let summarized = Outcome { summary: Some((lattice.clone(), 1)), ..Outcome::default() };
        let stored = |height: u64| Stored { block: vec![u8::try_from(height).unwrap()], certificate: vec![1] };
        assert_eq!(store.summary().unwrap(), None);
        store.commit(1, &stored(1), &Writes::new(), &summarized).unwrap();
        assert_eq!(store.summary().unwrap(), Some((1, lattice.clone(), 1)));
        drop(store);
        let mut store = RocksStore::open(dir.path()).unwrap();
        assert_eq!(store.summary().unwrap(), Some((1, lattice.clone(), 1)), "kept across a restart");
        store.commit(2, &stored(2), &Writes::new(), &Outcome::default()).unwrap();
        assert_eq!(store.summary().unwrap(), None);
        assert_eq!(
            store.reader().verify_state(&std::sync::atomic::AtomicBool::new(false)).unwrap(),
            None,
            "nothing to check"
        );
        // Committed by an older kos, which keeps no summary: the summary left is of an earlier block than the tip,
        // and the check after a start has nothing to check.
        store.commit(3, &stored(3), &Writes::new(), &summarized).unwrap();
        store.db.put(META_TIP, be(4)).unwrap();
        let cancel = std::sync::atomic::AtomicBool::new(false);
        assert_eq!(store.reader().verify_state(&cancel).unwrap(), None, "a summary of block 3 at tip 4");
        store.restore_begin(10).unwrap();
        assert_eq!(store.summary().unwrap(), None);
    }

    /// Issue 28, item 7: reading the whole state (a snapshot written every 1,000 blocks, an export) does not fill
    /// the block cache, which heaptrack showed a home's snapshots filling with blocks read once.
    #[test]
    fn a_whole_state_read_does_not_fill_the_block_cache() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(dir.path()).unwrap();
        let writes: Writes =
            (0..20_000u32).map(|index| (format!("k{index:06}").into_bytes(), Some(vec![7; 100]))).collect();
        store.commit(1, &Stored { block: vec![1], certificate: vec![1] }, &writes, &Outcome::default()).unwrap();
        store.db.flush_cf(store.cf(CF_STATE).unwrap()).unwrap();
        let reader = store.reader();
        let key = protocol::Keypair::from_seed(&[1; 32]).public();
        let genesis =
            Arc::new(crate::Genesis::parse(&crate::Genesis::devnet_text("kos-cache", 0, &[key], &[key], 1)).unwrap());
        let before = reader.block_cache_bytes();
        let snapshot = reader.snapshot(&genesis).unwrap();
        assert_eq!(snapshot.all().count(), 20_000);
        snapshot.check().unwrap();
        assert!(
            reader.block_cache_bytes() < before + 64 * 1024,
            "the cache grew from {before} to {} bytes",
            reader.block_cache_bytes()
        );
    }

    /// Issue 28, item 2: a node far behind takes a snapshot in place of its ledger. Until the state sync begins,
    /// its ledger is whole; from the synced write that begins it, the ledger is empty (blocks, events, index,
    /// state, consensus log, changes), so that a crash then leaves an empty ledger, never old blocks under a new
    /// state; the finished state sync holds only the snapshot's state and block.
    #[test]
    fn a_state_sync_of_a_node_far_behind_replaces_its_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(dir.path()).unwrap();
        let ids: Vec<Id> = (1..=30).map(|height| commit_transfer(&mut store, height)).collect();
        let mut writes = Writes::new();
        writes.insert(b"old".to_vec(), Some(b"pair".to_vec()));
        let validators = vec![(protocol::Keypair::from_seed(&[3; 32]).public(), 1)];
        commit_block(&mut store, 31, &writes, Some(validators.clone()));
        assert_eq!(store.reader().changes(0, 31).unwrap().map(|changes| changes.len()), Some(1));
        store.wal_append(32, b"a vote".to_vec()).unwrap();
        store.wal_sync().unwrap();
        assert_eq!(store.wal(32).unwrap().len(), 1);
        // As if it had pruned: blocks kept from 5 on.
        store.db.put(META_FIRST, be(5)).unwrap();
        assert_eq!(store.first().unwrap(), 5);
        // Interrupted right after it began: the old ledger is gone whole, and the start is an empty ledger's.
        store.restore_begin(500).unwrap();
        store.restore_pairs(&[(b"new".to_vec(), b"pair".to_vec())]).unwrap();
        drop(store);
        let mut store = RocksStore::open(dir.path()).unwrap();
        assert_eq!(store.tip().unwrap(), 0);
        assert_eq!(store.first().unwrap(), 1);
        assert_eq!(store.state().unwrap(), Vec::new());
        for height in [1, 30, 31] {
            assert_eq!(store.block(height).unwrap(), None);
            assert_eq!(store.events(height).unwrap(), None);
        }
        for id in &ids {
            assert_eq!(store.locate(id).unwrap(), None);
        }
        for family in FAMILIES {
            let cf = store.cf(family).unwrap();
            assert!(store.db.iterator_cf(cf, rocksdb::IteratorMode::Start).next().is_none(), "{family} is empty");
        }
        // Nothing of the record of changes is left; the empty ledger's record starts at height 1 again.
        assert_eq!(store.reader().changes(0, 1_000).unwrap(), Some(Vec::new()));
        // A ledger far behind again, and a state sync that finishes: only the snapshot's state and block.
        for height in 1..=30 {
            commit_transfer(&mut store, height);
        }
        commit_block(&mut store, 31, &writes, Some(validators));
        store.restore_begin(500).unwrap();
        assert_eq!(store.tip().unwrap(), 0, "a state sync under way leaves an empty ledger");
        for family in FAMILIES {
            let cf = store.cf(family).unwrap();
            assert!(store.db.iterator_cf(cf, rocksdb::IteratorMode::Start).next().is_none(), "{family} is empty");
        }
        let pairs = vec![(b"new".to_vec(), b"pair".to_vec())];
        store.restore_pairs(&pairs).unwrap();
        let stored = Stored { block: b"block-500".to_vec(), certificate: b"cert-500".to_vec() };
        let change = Change { header: vec![1], certificate: vec![2], validators: Vec::new() };
        store.restore_finish(500, &stored, &[(400, change.clone())], true).unwrap();
        drop(store);
        let store = RocksStore::open(dir.path()).unwrap();
        assert_eq!((store.tip().unwrap(), store.first().unwrap()), (500, 500));
        assert_eq!(store.state().unwrap(), pairs);
        assert_eq!(store.block(500).unwrap(), Some(stored));
        assert_eq!(store.block(31).unwrap(), None);
        assert_eq!(store.locate(&ids[29]).unwrap(), None);
        assert_eq!(store.reader().changes(0, 500).unwrap(), Some(vec![(400, change)]));
    }

    /// A home's state is read through the store (issue 28, item 7): a read that fails, here in a damaged table of
    /// the `state` family, is an error that says so, never a state without the pairs that could not be read.
    #[test]
    fn a_state_on_disk_that_cannot_be_read_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let pairs: Vec<(Vec<u8>, Vec<u8>)> =
            (0..2_000u32).map(|index| (format!("k{index:05}").into_bytes(), index.to_be_bytes().repeat(25))).collect();
        let tables: Vec<std::path::PathBuf> = {
            let mut store = RocksStore::open_with(dir.path(), Profile::Small).unwrap();
            assert!(store.backing().is_some(), "a home's state stays on disk");
            assert!(RocksStore::open(&dir.path().join("validator")).unwrap().backing().is_none());
            store.restore_begin(5).unwrap();
            store.restore_pairs(&pairs).unwrap();
            store.restore_finish(5, &Stored { block: vec![1], certificate: vec![2] }, &[], true).unwrap();
            store.db.flush_cf(store.cf(CF_STATE).unwrap()).unwrap();
            let files = store.db.live_files().unwrap();
            files
                .iter()
                .filter(|file| file.column_family_name == CF_STATE)
                .map(|file| dir.path().join(file.name.trim_start_matches('/')))
                .collect()
        };
        let key = protocol::Keypair::from_seed(&[1; 32]).public();
        let genesis =
            Arc::new(crate::Genesis::parse(&crate::Genesis::devnet_text("kos-disk", 0, &[key], &[key], 1)).unwrap());
        {
            let store = RocksStore::open_with(dir.path(), Profile::Small).unwrap();
            let state = crate::State::on_disk(genesis.clone(), store.backing().unwrap()).unwrap();
            assert_eq!(state.len(), pairs.len());
            assert!(store.reader().block_cache_bytes() > 0, "the reads went through the block cache");
        }
        assert!(!tables.is_empty());
        for table in &tables {
            let mut bytes = std::fs::read(table).unwrap();
            bytes[100..164].fill(0xaa);
            std::fs::write(table, bytes).unwrap();
        }
        let store = RocksStore::open_with(dir.path(), Profile::Small).unwrap();
        let error = crate::State::on_disk(genesis, store.backing().unwrap()).unwrap_err();
        assert!(error.contains("reading the ledger's state") && error.contains("orruption"), "{error}");
    }

    /// A new database records its format at once.
    #[test]
    fn a_new_database_records_its_format() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(stored_format(dir.path()).unwrap(), None);
        drop(RocksStore::open(dir.path()).unwrap());
        assert_eq!(stored_format(dir.path()).unwrap(), Some(FORMAT));
    }

    /// A database a newer kos wrote — a higher format, a column family this kos does not know — is refused with
    /// what to do, by a read-write and a read-only open alike, and left as it was.
    #[test]
    fn a_database_of_a_newer_format_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut options = rocksdb::Options::default();
            options.create_if_missing(true);
            options.create_missing_column_families(true);
            let families = FAMILIES.iter().copied().chain(["snapshots"]);
            let db = rocksdb::DB::open_cf(&options, dir.path(), families).unwrap();
            db.put(META_FORMAT, be(FORMAT + 1)).unwrap();
            db.put(META_TIP, be(7)).unwrap();
        }
        let Err(error) = RocksStore::open(dir.path()) else { panic!("a newer format opened") };
        let error = format!("{error:#}");
        assert!(error.contains(&format!("has format {}, written by a newer kos", FORMAT + 1)), "{error}");
        assert!(error.contains(&format!("reads formats up to {FORMAT}")), "{error}");
        let Err(error) = RocksStore::open_read_only(dir.path()) else { panic!("a newer format opened to read") };
        assert!(format!("{error:#}").contains("written by a newer kos"), "{error:#}");
        assert_eq!(stored_format(dir.path()).unwrap(), Some(FORMAT + 1), "left as it was");
    }
}
