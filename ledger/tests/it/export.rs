//! The export format (PROTOCOL.md §10): a deterministic one-block export is the vector PROTOCOL.md lists, it
//! verifies, and no truncation of it does.

use std::collections::BTreeMap;
use std::sync::Arc;

use ledger::Genesis;
use ledger::consensus::engine::{Config, Engine, Timer};
use ledger::store::MemoryStore;
use ledger::verify::{ExportWriter, verify_export};
use protocol::Keypair;

/// 2026-01-01T00:00:00Z, as the protocol vectors.
const GENESIS_MS: u64 = 1_767_225_600_000;

/// The export of a one-validator chain of one empty block, made at fixed times: the same bytes every run.
fn vector_export() -> (Vec<u8>, Genesis, ledger::hash::Hash) {
    let seed = protocol::vectors::seed(1);
    let validator = Keypair::from_seed(&seed).public();
    let text = Genesis::devnet_text("kos-vectors", GENESIS_MS, &[validator], &[validator], 1_000_000);
    let genesis = Arc::new(Genesis::parse(&text).unwrap());
    let config = Config { empty_block_ms: 1_000, ..Config::default() };
    let mut engine = Engine::new(genesis.clone(), &seed, MemoryStore::new(), config, GENESIS_MS + 1_000).unwrap();
    let _ = engine.start(GENESIS_MS + 1_000);
    let _ = engine.on_timer(Timer::Build, GENESIS_MS + 2_000);
    assert_eq!(engine.tip().0, 1, "the lone validator commits its block in the timer's call");
    let stored = engine.blocks_from(1, 1, usize::MAX).pop().unwrap();
    let mut bytes = Vec::new();
    let mut writer = ExportWriter::new(&mut bytes, &genesis).unwrap();
    writer.block(&stored).unwrap();
    writer.finish().unwrap();
    (bytes, (*genesis).clone(), engine.tip().1)
}

/// The records of a file: each `u32be length ‖ bytes`.
fn records(bytes: &[u8]) -> Vec<&[u8]> {
    let mut records = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 4 {
        let length = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        records.push(&rest[4..4 + length]);
        rest = &rest[4 + length..];
    }
    assert!(rest.is_empty());
    records
}

/// The lines of PROTOCOL.md's `text` block whose first line starts with `first`, from that line on.
fn protocol_md_block(first: &str) -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md");
    let text = std::fs::read_to_string(path).expect("PROTOCOL.md at the repository root");
    text.lines()
        .skip_while(|line| !line.starts_with(first))
        .take_while(|line| !line.starts_with("```"))
        .map(str::to_owned)
        .collect()
}

/// A block's `key: value` lines.
fn pairs(lines: &[String]) -> impl Iterator<Item = (String, String)> + '_ {
    lines.iter().filter_map(|line| line.split_once(": ")).map(|(key, value)| (key.to_owned(), value.to_owned()))
}

/// PROTOCOL.md's export vector: the lines of the block that starts with `export-vector:`.
fn documented() -> BTreeMap<String, String> {
    pairs(&protocol_md_block("export-vector: ")).collect()
}

#[test]
fn protocol_md_lists_the_export_vector_and_it_verifies() {
    let (bytes, genesis, tip) = vector_export();
    let records = records(&bytes);
    let mut produced = BTreeMap::from([
        ("export-vector".to_owned(), "one block".to_owned()),
        ("genesis-hash".to_owned(), genesis.hash.to_string()),
        ("tip".to_owned(), format!("1 {tip}")),
        ("file-bytes".to_owned(), bytes.len().to_string()),
        ("file-blake3".to_owned(), blake3::hash(&bytes).to_hex().to_string()),
    ]);
    for (index, record) in records.iter().enumerate() {
        produced.insert(format!("record-{index}"), hex::encode(record));
    }
    let listed = documented();
    if listed != produced {
        let text: String = produced.iter().map(|(key, value)| format!("{key}: {value}\n")).collect();
        panic!("PROTOCOL.md §10's export vector differs from the code's; the code makes:\n{text}");
    }
    // The documented bytes verify, to the documented tip.
    let mut file = Vec::new();
    for index in 0..3 {
        let record = hex::decode(&listed[&format!("record-{index}")]).unwrap();
        file.extend_from_slice(&(record.len() as u32).to_be_bytes());
        file.extend_from_slice(&record);
    }
    let verifier = verify_export(&mut file.as_slice(), Some(&genesis)).unwrap();
    assert_eq!((verifier.height(), verifier.tip_hash()), (1, tip));
}

/// Issue 25, defect 5: an export cut at a record boundary or inside a length prefix verified with exit 0 ("verified
/// 0 blocks" even). Every cut of the vector export is now an error, and so is anything after its trailer.
#[test]
fn no_truncation_of_an_export_verifies() {
    let (bytes, genesis, _) = vector_export();
    for length in 0..bytes.len() {
        let result = verify_export(&mut &bytes[..length], Some(&genesis));
        assert!(result.is_err(), "the export cut to {length} of {} bytes verified", bytes.len());
    }
    assert!(verify_export(&mut bytes.as_slice(), Some(&genesis)).is_ok());
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0, 0, 0, 1, 0x80]);
    let Err(error) = verify_export(&mut longer.as_slice(), Some(&genesis)) else { panic!("verified") };
    assert!(format!("{error:#}").contains("after its trailer"), "{error:#}");
    // A trailer naming another tip.
    let records = records(&bytes);
    let forged: (String, u64, serde_bytes::ByteBuf) =
        (ledger::verify::EXPORT_END_MAGIC.to_owned(), 1, serde_bytes::ByteBuf::from(vec![7u8; 32]));
    let forged = serde_cbor::to_vec(&forged).unwrap();
    let mut file = Vec::new();
    for record in [records[0], records[1], forged.as_slice()] {
        file.extend_from_slice(&(record.len() as u32).to_be_bytes());
        file.extend_from_slice(record);
    }
    let Err(error) = verify_export(&mut file.as_slice(), Some(&genesis)) else { panic!("verified") };
    assert!(format!("{error:#}").contains("the trailer names tip 1"), "{error:#}");
}

/// PROTOCOL.md §12's ledger vectors: the lines of the block that starts with `ledger-vectors:`, in order.
fn documented_ledger_vectors() -> Vec<(String, String)> {
    pairs(&protocol_md_block("ledger-vectors: ")).collect()
}

/// What the code makes for §12's ledger vectors: everything a verifier hashes or signs besides messages, from the
/// export vector's genesis and block 1.
fn ledger_vectors() -> Vec<(String, String)> {
    use ledger::consensus::context::{Address, Height, Proposal, Vote, proposal_digest, vote_digest};
    use ledger::hash::{merkle_proof, merkle_root};
    use ledger::state::{Lattice, validators_hash};
    use malachite_types::{NilOrVal, Round, VoteType};

    let (bytes, genesis, tip) = vector_export();
    let genesis = Arc::new(genesis);
    let mut lines = vec![("ledger-vectors".to_owned(), "kos-vectors".to_owned())];
    let mut line = |key: String, value: String| lines.push((key, value));
    line("genesis-hash".into(), genesis.hash.to_string());
    let first = ledger::State::genesis(genesis.clone());
    for (index, (key, value)) in first.pairs().enumerate() {
        line(format!("first-state-pair-{index:02}"), format!("{} {}", hex::encode(&key), hex::encode(&value)));
    }
    line("first-state-root".into(), first.root().to_string());
    line("empty-state-root".into(), Lattice::default().root().to_string());
    let mut one = Lattice::default();
    one.add(b"key", b"value");
    line("kv-pair".into(), format!("{} {}", hex::encode(b"key"), hex::encode(b"value")));
    line("kv-pair-root".into(), one.root().to_string());
    let mut empty = Lattice::default();
    empty.add(b"key", b"");
    line("kv-empty-value-root".into(), empty.root().to_string());

    let mut validators: Vec<(protocol::PublicKey, u64)> =
        (1..=4u8).map(|author| (protocol::vectors::public_key(author), u64::from(author))).collect();
    validators.sort();
    let listed: Vec<String> = validators.iter().map(|(key, power)| format!("{} {power}", key.to_hex())).collect();
    line("validators".into(), listed.join(", "));
    line("validators-hash".into(), validators_hash(&validators).to_string());

    let items: Vec<&[u8]> = vec![b"a", b"b", b"c", b"d", b"e"];
    line("merkle-empty-root".into(), merkle_root::<&[u8]>(&[]).to_string());
    line("merkle-items".into(), items.iter().map(hex::encode).collect::<Vec<_>>().join(" "));
    line("merkle-root".into(), merkle_root(&items).to_string());
    let proof = merkle_proof(&items, 3).unwrap();
    line("merkle-proof-3".into(), proof.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "));

    let records = records(&bytes);
    let (height, block, _certificate): (u64, serde_bytes::ByteBuf, serde_bytes::ByteBuf) =
        serde_cbor::from_slice(records[1]).unwrap();
    assert_eq!(height, 1);
    let block = ledger::Block::from_bytes(&block).unwrap();
    assert_eq!(block.hash(), tip);
    line("block-1-hash".into(), block.hash().to_string());
    line("block-1-state-root".into(), block.header().state_root.to_string());
    let network = genesis.network.clone();
    let validator = Address(protocol::vectors::public_key(1));
    let vote = |vote_type, value| Vote { height: Height(1), round: Round::new(0), vote_type, value, validator };
    line(
        "vote-digest-precommit".into(),
        vote_digest(&network, &vote(VoteType::Precommit, NilOrVal::Val(tip))).to_string(),
    );
    line("vote-digest-nil-prevote".into(), vote_digest(&network, &vote(VoteType::Prevote, NilOrVal::Nil)).to_string());
    let proposal =
        Proposal { height: Height(1), round: Round::new(0), block, pol_round: Round::Nil, proposer: validator };
    line("proposal-digest".into(), proposal_digest(&network, &proposal).to_string());
    snapshot_vector(&bytes, &genesis, &mut line);
    suspects_vector(&mut line);
    lines
}

/// §10 *Snapshots*: the state after the export vector's block 1, as one chunk, and its manifest with its hash.
fn snapshot_vector(export: &[u8], genesis: &Genesis, line: &mut impl FnMut(String, String)) {
    let verifier = verify_export(&mut &export[..], Some(genesis)).unwrap();
    let state = verifier.state();
    let mut chunker = ledger::snapshot::Chunker::new();
    let mut chunks: Vec<Vec<u8>> = state.pairs().filter_map(|(key, value)| chunker.push(&key, &value)).collect();
    let (last, manifest) = chunker.finish(1, state.root());
    chunks.extend(last);
    manifest.check(1, &state.root()).unwrap();
    assert_eq!(chunks.len(), 1);
    line("snapshot-chunk-0".into(), hex::encode(&chunks[0]));
    let bytes = manifest.to_bytes();
    line("snapshot-manifest".into(), hex::encode(&bytes));
    line("snapshot-manifest-hash".into(), ledger::snapshot::manifest_hash(&bytes).to_string());
}

/// §10 *cells* step 1, three windows of members with asset ids of 32 bytes `n` and test author `n`: each interval
/// (the judged one last) as its gap, its tolerance and its members' `n:import:export`; the attested members; then
/// each judged member's suspect register with its score and share (or `none`), and the named. Window `a`: member 2
/// claims a fifth more export than it made (and interval 2's gap is negative, so `s` rounds toward zero). Window `b`:
/// member 1's device attests its readings (it explains the gaps best, yet is suspected after member 2), member 2
/// under-reports its import and has no record in interval 0.
/// Window `c`: a lone member in a window of one interval (`B = 0`).
/// One interval of a suspects window: (gap, tolerance, the members' (n, import, export)).
type SuspectsInterval = (i128, u64, Vec<(u8, u64, u64)>);

fn suspects_vector(line: &mut impl FnMut(String, String)) {
    let windows: [(&str, Vec<SuspectsInterval>, Vec<u8>); 3] = [
        (
            "a",
            vec![
                (112, 84, vec![(1, 0, 800), (2, 0, 600), (3, 300, 0)]),
                (70, 70, vec![(1, 0, 400), (2, 0, 360), (3, 250, 0)]),
                (-15, 61, vec![(1, 100, 0), (2, 0, 60), (3, 400, 0)]),
                (160, 90, vec![(1, 0, 1_000), (2, 0, 840), (3, 200, 0)]),
            ],
            vec![],
        ),
        (
            "b",
            vec![
                (40, 60, vec![(1, 0, 500), (3, 600, 0)]),
                (90, 70, vec![(1, 0, 600), (2, 400, 0), (3, 200, 0)]),
                (130, 75, vec![(1, 0, 700), (2, 500, 0), (3, 100, 0)]),
            ],
            vec![1],
        ),
        ("c", vec![(120, 60, vec![(1, 0, 600)])], vec![]),
    ];
    for (name, window, attested) in windows {
        suspects_case(line, name, &window, &attested);
    }
}

fn suspects_case(line: &mut impl FnMut(String, String), name: &str, window: &[SuspectsInterval], attested: &[u8]) {
    use ledger::state::suspects::{GapFit, MemberFlows, named};
    let asset = |n: u8| protocol::Id([n; 32]);
    let mut fit = GapFit::default();
    for (t, (gap, tolerance, members)) in window.iter().enumerate() {
        let flows = members.iter().map(|&(n, import_wh, export_wh)| (asset(n), MemberFlows { import_wh, export_wh }));
        fit.add(*gap, *tolerance, flows);
        let listed: Vec<String> = members.iter().map(|(n, import, export)| format!("{n}:{import}:{export}")).collect();
        line(
            format!("suspects-{name}-interval-{t}"),
            format!("gap {gap} tolerance {tolerance} members {}", listed.join(" ")),
        );
    }
    let listed: Vec<String> = attested.iter().map(ToString::to_string).collect();
    line(format!("suspects-{name}-attested"), if listed.is_empty() { "none".to_owned() } else { listed.join(" ") });
    let (gap, tolerance, now) = window.last().unwrap();
    let mut suspects = Vec::new();
    for &(n, import_wh, export_wh) in now {
        let author = protocol::vectors::public_key(n);
        let attested = u8::from(attested.contains(&n));
        let suspect = fit.suspect(asset(n), author, attested, MemberFlows { import_wh, export_wh }, *gap);
        let text = match &suspect {
            Some(suspect) => format!(
                "{} score {} share {}",
                if suspect.register == 0 { "export" } else { "import" },
                suspect.score,
                suspect.share_wh
            ),
            None => "none".to_owned(),
        };
        line(format!("suspects-{name}-member-{n}"), text);
        suspects.extend(suspect);
    }
    let excess = gap.unsigned_abs() - u128::from(*tolerance);
    let named: Vec<String> = named(suspects, excess, 8).iter().map(protocol::PublicKey::to_hex).collect();
    line(format!("suspects-{name}-named"), named.join(" "));
}

/// Issue 31, item 7: everything that is hashed or signed has a vector — the genesis hash, the first state pair by
/// pair and its root, a lattice of one pair, a validators hash, a Merkle root and an inclusion proof, a block hash,
/// a vote digest and a proposal digest.
#[test]
fn protocol_md_lists_the_ledger_vectors() {
    let produced = ledger_vectors();
    if documented_ledger_vectors() != produced {
        let text: String = produced.iter().map(|(key, value)| format!("{key}: {value}\n")).collect();
        panic!("PROTOCOL.md §12's ledger vectors differ from the code's; the code makes:\n{text}");
    }
}

/// The every-kind chain: one validator (test author 1) and blocks that hold every kind of ledger entry, made at
/// fixed times by the consensus engine, exported. PROTOCOL.md §12 lists each block's entry kinds and state root;
/// the export itself is `docs/vectors/every-kind.export`. After a change, `KOS_WRITE_VECTORS=1` writes the file, and
/// the test's failure prints the lines for PROTOCOL.md.
mod every_kind {
    use super::*;
    use ledger::consensus::engine::Timer;
    use protocol::message::{
        Action, AlertRule, Asset, AssetKind, Award, BarterCycle, BarterLeg, BarterOffer, Bid, Body, Burn, Cancel,
        Choice, Deliver, Dispute, Empty, Evidence, Guild, GuildApproval, GuildSpend, Job, JobKind, Limits, Mechanism,
        MeterSource, Mint, Offer, Outcome, PoolId, Proof, Proposal, Reading, Report, Resource, Settlement, Severity,
        Side, Transfer, Verdict, Vote,
    };
    use protocol::types::{BoundedVec, Cell, MeterId, Text, TokenId};
    use protocol::{Draft, Envelope, Id, NetworkId, PublicKey};

    pub(super) const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/vectors/every-kind.export");

    struct Chain {
        keys: Vec<Keypair>,
        engine: Engine<MemoryStore>,
        genesis: Arc<Genesis>,
        now_ms: u64,
        nonce: u64,
    }

    impl Chain {
        fn key(&self, author: usize) -> PublicKey {
            self.keys[author - 1].public()
        }

        fn sign(&mut self, author: usize, body: Body) -> Envelope {
            self.nonce += 1;
            Draft {
                network: NetworkId::new("kos-vectors").unwrap(),
                nonce: self.nonce,
                created_ms: self.now_ms,
                expires_ms: self.now_ms + 86_400_000,
                body,
            }
            .sign(&self.keys[author - 1])
        }

        /// Commits the next block with exactly `entries`, one second after the last.
        fn block(&mut self, entries: &[Envelope]) {
            let height = self.engine.tip().0 + 1;
            self.now_ms += 1_000;
            let _ = self.engine.on_timer(Timer::NextHeight, self.now_ms);
            let bytes: Vec<Vec<u8>> = entries.iter().map(Envelope::to_bytes).collect();
            let (results, _) = self.engine.on_entries(bytes, self.now_ms);
            for (result, entry) in results.iter().zip(entries) {
                assert!(result.is_ok(), "{:?} refused: {result:?}", entry.kind());
            }
            if self.engine.tip().0 < height {
                let _ = self.engine.on_timer(Timer::Build, self.now_ms);
            }
            assert_eq!(self.engine.tip().0, height, "block {height} committed");
            let stored = self.engine.blocks_from(height, 1, usize::MAX).pop().unwrap();
            let block = ledger::Block::from_bytes(&stored.block).unwrap();
            assert_eq!(block.entry_count(), entries.len(), "block {height} holds every entry given");
        }
    }

    /// Blocks 7 to 12, where time moves on: an interval trade and its release by the parties' readings, a fee
    /// voted in and paid, a proposal rejected at its end, a job closed without bids, barter legs returned without
    /// receipts, a redistribution of the commons, and replay guards, cancels, fills and records forgotten.
    fn later_blocks(chain: &mut Chain) {
        let credit = TokenId::new("credit").unwrap();
        let cell = Cell::new("u33db").unwrap();
        let delivery_start_s = GENESIS_MS / 1000 + 900;
        // Block 7: an energy trade for the interval after next, a fee proposal, a proposal nobody votes on, a job.
        let pool = PoolId { resource: Resource::Energy, token: credit.clone(), cell: cell.clone(), interval_s: 900 };
        let offer =
            |side, unit_price| Offer { pool: pool.clone(), side, quantity: 1_000, unit_price, delivery_start_s };
        let bid = chain.sign(2, Body::Offer(offer(Side::Bid, 250)));
        let ask = chain.sign(3, Body::Offer(offer(Side::Ask, 150)));
        let proposal =
            |action, period| Proposal { action, title: text("a change"), text: text(""), voting_period_blocks: period };
        let fee = Action::SetParameter(protocol::message::SetParameter {
            name: protocol::types::ParameterName::new("fee_per_entry").unwrap(),
            value: 10,
        });
        let now_ms = chain.now_ms;
        let job = Job {
            kind: JobKind::Text,
            title: text("Translate the street's notice"),
            text: text(""),
            needs: BoundedVec::default(),
            skills: BoundedVec::default(),
            cell: cell.clone(),
            radius_m: 0,
            token: credit.clone(),
            reward: 1_000,
            collateral: 0,
            slash_ppm: 0,
            tier: 0,
            guild: BoundedVec::default(),
            rule: protocol::message::AwardRule::FirstQualified,
            per_km: 0,
            evidence: Evidence::Acceptance(Empty),
            bids_until_ms: now_ms + 60_000,
            deadline_ms: now_ms + 3_600_000,
        };
        let seven = vec![
            chain.sign(
                3,
                Body::Settlement(Settlement {
                    bid: Box::new(bid),
                    ask: Box::new(ask),
                    quantity: 1_000,
                    unit_price: 200,
                    mechanism: Mechanism::PayAsClear,
                }),
            ),
            chain.sign(1, Body::Proposal(proposal(fee, 10))),
            chain.sign(1, Body::Proposal(proposal(Action::Text(Empty), 2))),
            chain.sign(4, Body::Job(job)),
        ];
        chain.block(&seven);
        // Block 8: the fee passes; every later entry pays 10 to the commons.
        let vote = chain.sign(1, Body::Vote(Vote { proposal: seven[1].id(), choice: Choice::Yes, stake: 0 }));
        chain.block(&[vote]);
        // Block 9, once the delivery interval and its grace are over: both parties' readings, in the block that
        // releases the escrow; the interval's cell record closes, the silent proposal is rejected, the job closes.
        chain.now_ms = (delivery_start_s + 900) * 1000 + 900_000;
        let reading = |meter: &str, import_wh, export_wh, import_counter_wh, export_counter_wh| Reading {
            meter: MeterId::new(meter).unwrap(),
            interval_start_s: delivery_start_s,
            interval_s: 900,
            import_wh,
            export_wh,
            generation_wh: export_wh,
            consumption_wh: import_wh,
            import_counter_wh,
            export_counter_wh,
            source: MeterSource::Simulated,
            device: BoundedVec::default(),
        };
        let nine = vec![
            chain.sign(3, Body::Reading(reading("home-3", 0, 1_000, 1_000, 3_000))),
            chain.sign(2, Body::Reading(reading("home-2", 1_000, 0, 1_000, 0))),
        ];
        chain.block(&nine);
        // Block 10, a day later: the barter legs' receipt window is over (returned), the replay guards of the first
        // blocks expire, and the commons' fees are redistributed (height 10).
        chain.now_ms = GENESIS_MS + 86_400_000 + 10_000;
        chain.block(&[]);
        // Block 11, eight days in: cancels and fills expire, the interval records are forgotten.
        chain.now_ms = GENESIS_MS + 8 * 86_400_000;
        chain.block(&[]);
        // Block 12, 31 days in: alerts, reports, ended jobs and legs, redistributions are forgotten.
        chain.now_ms = GENESIS_MS + 31 * 86_400_000;
        chain.block(&[]);
    }

    /// Blocks 13 to 16, a month in: the cell gets a feeder (of the guild of authors 1 and 2), two energy trades
    /// in its pool for one interval (a dynamic price, tax and royalty), and that interval's readings: author 3
    /// claims twice the export the feeder measured. The close finds the interval unbalanced, names author 3, holds
    /// both escrows and opens its case; author 4, the one juror, refutes it; the held trades are released: author
    /// 3's sale is void of value and penalised, author 2's paid with tax and royalty, its buyer (no meter) short.
    fn feeder_blocks(chain: &mut Chain, guild: PublicKey) {
        let credit = TokenId::new("credit").unwrap();
        let cell = Cell::new("u33db").unwrap();
        let start_s = GENESIS_MS / 1000 + 32 * 86_400;
        let mut feeder = asset(AssetKind::Feeder, "the street's feeder", guild, "feeder", "u33db");
        feeder.limits = Limits {
            generation_w_max: 100_000,
            import_w_max: 100_000,
            export_w_max: 100_000,
            consumption_w_max: 100_000,
            storage_w_max: 0,
            storage_wh: 0,
        };
        let pool = PoolId { resource: Resource::Energy, token: credit.clone(), cell: cell.clone(), interval_s: 900 };
        chain.now_ms = start_s * 1000 - 60_000;
        let trade = |chain: &mut Chain, buyer: usize, seller: usize, quantity: u64| {
            let offer =
                |side, unit_price| Offer { pool: pool.clone(), side, quantity, unit_price, delivery_start_s: start_s };
            let bid = chain.sign(buyer, Body::Offer(offer(Side::Bid, 250)));
            let ask = chain.sign(seller, Body::Offer(offer(Side::Ask, 150)));
            let settlement = Settlement {
                bid: Box::new(bid),
                ask: Box::new(ask),
                quantity,
                unit_price: 200,
                mechanism: Mechanism::PayAsClear,
            };
            chain.sign(seller, Body::Settlement(settlement))
        };
        let thirteen = vec![chain.sign(1, Body::Asset(feeder)), trade(chain, 2, 3, 1_000), trade(chain, 4, 2, 500)];
        chain.block(&thirteen);
        // Block 14, just after the interval: the feeder measured 500 Wh leaving the cell; author 3 claims 1 kWh.
        chain.now_ms = (start_s + 900) * 1000;
        let reading = |meter: &str, import_wh, export_wh, generation_wh, counters: (u64, u64)| Reading {
            meter: MeterId::new(meter).unwrap(),
            interval_start_s: start_s,
            interval_s: 900,
            import_wh,
            export_wh,
            generation_wh,
            consumption_wh: (generation_wh + import_wh).saturating_sub(export_wh),
            import_counter_wh: counters.0,
            export_counter_wh: counters.1,
            source: MeterSource::Simulated,
            device: BoundedVec::default(),
        };
        let fourteen = vec![
            chain.sign(1, Body::Reading(reading("feeder", 0, 500, 500, (0, 500)))),
            chain.sign(3, Body::Reading(reading("home-3", 0, 1_000, 1_000, (1_000, 4_000)))),
            chain.sign(2, Body::Reading(reading("home-2", 1_000, 500, 0, (2_000, 500)))),
        ];
        chain.block(&fourteen);
        // Block 15, at the close: unbalanced, author 3 named, both escrows held, a case with author 4 as its juror.
        chain.now_ms = (start_s + 900) * 1000 + 900_000;
        chain.block(&[]);
        // Block 16: the juror refutes author 3's readings; the case is decided and the held trades released.
        let case = ledger::state::feeder_case_id("u33db", start_s, 900, &chain.key(3));
        let verdict = chain.sign(4, Body::Verdict(Verdict { job: case, outcome: Outcome::Failed }));
        chain.block(&[verdict]);
    }

    /// Blocks 17 to 20, 33 days in: a meter asset naming a device key and a reading its device signed; a freeze of
    /// author 2 for two blocks, passed by the validator in block 18 and lifted at the end of block 20; a text
    /// proposal decided by stake (a rule of the genesis), author 3
    /// locking 5,000 of its credit into its vote, given back when the proposal closes at the end of block 20.
    fn device_and_override_blocks(chain: &mut Chain) {
        let start_s = GENESIS_MS / 1000 + 33 * 86_400;
        let device = Keypair::from_seed(&protocol::vectors::seed(9));
        let mut manifest = asset(AssetKind::Meter, "a home's meter with a signing device", chain.key(4), "home-4", "");
        manifest.device = BoundedVec::new(vec![protocol::message::DeviceKey::Ed25519(device.public())]).unwrap();
        chain.now_ms = (start_s + 900) * 1000;
        let freeze = Action::Override(protocol::message::Override {
            measure: protocol::message::Measure::Freeze(protocol::message::Freeze { account: chain.key(2) }),
            duration_blocks: 2,
        });
        let proposal =
            |action, period| Proposal { action, title: text("a change"), text: text(""), voting_period_blocks: period };
        let seventeen = vec![
            chain.sign(4, Body::Asset(manifest)),
            chain.sign(1, Body::Proposal(proposal(freeze, 5))),
            chain.sign(3, Body::Proposal(proposal(Action::Text(Empty), 3))),
        ];
        chain.block(&seventeen);
        let reading = Reading {
            meter: MeterId::new("home-4").unwrap(),
            interval_start_s: start_s,
            interval_s: 900,
            import_wh: 200,
            export_wh: 300,
            generation_wh: 400,
            consumption_wh: 300,
            import_counter_wh: 5_200,
            export_counter_wh: 7_300,
            source: MeterSource::Simulated,
            device: BoundedVec::default(),
        };
        let network = NetworkId::new("kos-vectors").unwrap();
        let attested = protocol::message::attest(&network, &chain.key(4), reading, &device);
        let eighteen = vec![
            chain.sign(1, Body::Vote(Vote { proposal: seventeen[1].id(), choice: Choice::Yes, stake: 0 })),
            chain.sign(4, Body::Reading(attested)),
            chain.sign(3, Body::Vote(Vote { proposal: seventeen[2].id(), choice: Choice::Yes, stake: 5_000 })),
        ];
        chain.block(&eighteen);
        chain.block(&[]);
        chain.block(&[]);
    }

    /// An asset of one meter: 10 kW of generation, 40 kW of import, export and consumption, no storage, no device.
    fn asset(kind: AssetKind, purpose: &str, owner: PublicKey, meter: &str, cell: &str) -> Asset {
        Asset {
            kind,
            purpose: text(purpose),
            owner,
            meters: BoundedVec::new(vec![MeterId::new(meter).unwrap()]).unwrap(),
            limits: Limits {
                generation_w_max: 10_000,
                import_w_max: 40_000,
                export_w_max: 40_000,
                consumption_w_max: 40_000,
                storage_w_max: 0,
                storage_wh: 0,
            },
            cell: Cell::new(cell).unwrap(),
            commissioned_s: 0,
            maintenance_interval_s: 0,
            device: BoundedVec::default(),
        }
    }

    fn text<const N: usize>(text: &str) -> Text<N> {
        Text::new(text).unwrap()
    }

    /// A block of the chain: its height, its entries' kinds and its state root.
    pub(super) type Summary = (u64, Vec<&'static str>, String);

    /// The chain's export, and each block's summary.
    pub(super) fn chain() -> (Vec<u8>, Vec<Summary>) {
        let keys: Vec<Keypair> = (1..=4u8).map(|author| Keypair::from_seed(&protocol::vectors::seed(author))).collect();
        let public: Vec<PublicKey> = keys.iter().map(Keypair::public).collect();
        let mut genesis_text = Genesis::devnet_text("kos-vectors", GENESIS_MS, &public[..1], &public, 1_000_000);
        genesis_text.push_str(&format!(
            "\n[governance]\nmembers = [\"{}\", \"{}\"]\n\n[params]\nredistribution_epoch_blocks = 10\n\
             redistribution_balance_max = 100000000\ncommons_tax_ppm = 10000\n\n[[pools]]\n\
             pool = \"energy/credit/u33db/900\"\nroyalty_ppm = 20000\nroyalty_account = \"{}\"\n\
             dynamic = {{ base = 100, min = 50, max = 400, capacity = 10000, target_ppm = 500000, step_ppm = 100000 }}\n\n\
             [[governance.rules]]\nkind = \"text\"\nweight = \"stake:credit\"\nquorum_percent = 0\n\
             threshold_percent = 51\n",
            public[2].to_hex(),
            public[3].to_hex(),
            public[3].to_hex()
        ));
        let genesis = Arc::new(Genesis::parse(&genesis_text).unwrap());
        let config = Config { empty_block_ms: 1_000, ..Config::default() };
        let seed = protocol::vectors::seed(1);
        let mut engine = Engine::new(genesis.clone(), &seed, MemoryStore::new(), config, GENESIS_MS + 1_000).unwrap();
        let _ = engine.start(GENESIS_MS + 1_000);
        let mut chain = Chain { keys, engine, genesis, now_ms: GENESIS_MS + 1_000, nonce: 0 };
        let credit = TokenId::new("credit").unwrap();
        let cell = Cell::new("u33db").unwrap();

        // Block 1: tokens, an asset, a guild, a proposal, a cancel.
        let home = asset(AssetKind::Meter, "a home's meter", chain.key(3), "home-3", "u33db");
        let memo = || text("");
        let one = vec![
            chain.sign(
                1,
                Body::Transfer(Transfer { to: chain.key(2), token: credit.clone(), amount: 1_000, memo: memo() }),
            ),
            chain.sign(1, Body::Mint(Mint { to: chain.key(3), token: credit.clone(), amount: 500, memo: memo() })),
            chain.sign(2, Body::Burn(Burn { token: credit.clone(), amount: 100, memo: memo() })),
            chain.sign(3, Body::Asset(home)),
            chain.sign(
                1,
                Body::Guild(Guild {
                    name: text("the street"),
                    members: BoundedVec::new({
                        let mut members = vec![chain.key(1), chain.key(2)];
                        members.sort();
                        members
                    })
                    .unwrap(),
                    threshold: 2,
                }),
            ),
            chain.sign(
                1,
                Body::Proposal(Proposal {
                    action: Action::Text(Empty),
                    title: text("a street party"),
                    text: text(""),
                    voting_period_blocks: 10,
                }),
            ),
            chain.sign(2, Body::Cancel(Cancel { offer: Id([7; 32]) })),
        ];
        chain.block(&one);
        let (asset_id, guild_id, proposal_id) = (one[3].id(), one[4].id(), one[5].id());
        let guild = protocol::message::guild_account(&guild_id);

        // Block 2: a vote, a guild spend (and the guild's funds), a reading, an alert, a report, a settlement, a
        // barter cycle, a job.
        let interval_start_s = (GENESIS_MS / 1000 / 900 - 1) * 900;
        let reading = Reading {
            meter: MeterId::new("home-3").unwrap(),
            interval_start_s,
            interval_s: 900,
            import_wh: 0,
            export_wh: 400,
            generation_wh: 500,
            consumption_wh: 100,
            import_counter_wh: 1_000,
            export_counter_wh: 2_000,
            source: MeterSource::Simulated,
            device: BoundedVec::default(),
        };
        let pool = PoolId { resource: Resource::Energy, token: credit.clone(), cell: cell.clone(), interval_s: 0 };
        let offer =
            |side, unit_price| Offer { pool: pool.clone(), side, quantity: 1_000, unit_price, delivery_start_s: 0 };
        let bid = chain.sign(2, Body::Offer(offer(Side::Bid, 250)));
        let ask = chain.sign(3, Body::Offer(offer(Side::Ask, 150)));
        let barter = |give, want| BarterOffer {
            give,
            give_quantity: 1_000,
            want,
            want_quantity: 1_000,
            cell: cell.clone(),
            delivery_start_s: 0,
        };
        let compute = chain.sign(2, Body::BarterOffer(barter(Resource::Compute, Resource::Memory)));
        let memory = chain.sign(4, Body::BarterOffer(barter(Resource::Memory, Resource::Compute)));
        let now_ms = chain.now_ms;
        let job = Job {
            kind: JobKind::Delivery,
            title: text("Carry 20 l of water to the shelter"),
            text: text(""),
            needs: BoundedVec::default(),
            skills: BoundedVec::default(),
            cell: cell.clone(),
            radius_m: 0,
            token: credit.clone(),
            reward: 10_000,
            collateral: 2_000,
            slash_ppm: 500_000,
            tier: 0,
            guild: BoundedVec::default(),
            rule: protocol::message::AwardRule::LowestPrice,
            per_km: 0,
            evidence: Evidence::Acceptance(Empty),
            bids_until_ms: now_ms + 60_000,
            deadline_ms: now_ms + 3_600_000,
        };
        let two = vec![
            chain.sign(1, Body::Vote(Vote { proposal: proposal_id, choice: Choice::Yes, stake: 1_000 })),
            chain.sign(1, Body::Transfer(Transfer { to: guild, token: credit.clone(), amount: 2_000, memo: memo() })),
            chain.sign(
                1,
                Body::GuildSpend(GuildSpend {
                    guild,
                    to: chain.key(4),
                    token: credit.clone(),
                    amount: 1_500,
                    memo: memo(),
                }),
            ),
            chain.sign(3, Body::Reading(reading)),
            chain.sign(
                3,
                Body::Alert(protocol::message::Alert {
                    asset: asset_id,
                    rule: AlertRule::Wear,
                    measured: 700_000,
                    threshold: 800_000,
                    interval_start_s,
                }),
            ),
            chain.sign(
                4,
                Body::Report(Report {
                    asset: BoundedVec::new(vec![asset_id]).unwrap(),
                    cell: cell.clone(),
                    severity: Severity::Info,
                    text: text("the meter's display is dim"),
                    reading: BoundedVec::default(),
                }),
            ),
            chain.sign(
                3,
                Body::Settlement(Settlement {
                    bid: Box::new(bid),
                    ask: Box::new(ask),
                    quantity: 1_000,
                    unit_price: 200,
                    mechanism: Mechanism::ContinuousDoubleAuction,
                }),
            ),
            chain.sign(
                1,
                Body::BarterCycle(BarterCycle {
                    legs: BoundedVec::new(vec![
                        BarterLeg { offer: compute, give_quantity: 1_000 },
                        BarterLeg { offer: memory, give_quantity: 1_000 },
                    ])
                    .unwrap(),
                }),
            ),
            chain.sign(1, Body::Job(job)),
        ];
        chain.block(&two);
        let (spend_id, job_id) = (two[2].id(), two[8].id());

        // Block 3: the guild's second approval, a bid. Block 4: the award. Block 5: the delivery and a dispute.
        // Block 6: the jurors' verdicts.
        let three = vec![
            chain.sign(2, Body::GuildApproval(GuildApproval { spend: spend_id })),
            chain.sign(
                2,
                Body::Bid(Bid {
                    job: job_id,
                    price: 8_000,
                    start_ms: now_ms,
                    collateral: 2_000,
                    cell: cell.clone(),
                    distance_m: 0,
                }),
            ),
        ];
        chain.block(&three);
        let four = vec![chain.sign(1, Body::Award(Award { job: job_id, bid: three[1].id() }))];
        chain.block(&four);
        let five = vec![
            chain.sign(2, Body::Deliver(Deliver { job: job_id, proof: Proof::Claim(Empty) })),
            chain.sign(1, Body::Dispute(Dispute { job: job_id, text: text("nothing arrived") })),
        ];
        chain.block(&five);
        let six = vec![
            chain.sign(3, Body::Verdict(Verdict { job: job_id, outcome: Outcome::Done })),
            chain.sign(4, Body::Verdict(Verdict { job: job_id, outcome: Outcome::Done })),
        ];
        chain.block(&six);
        later_blocks(&mut chain);
        feeder_blocks(&mut chain, guild);
        device_and_override_blocks(&mut chain);

        let mut bytes = Vec::new();
        let mut writer = ExportWriter::new(&mut bytes, &chain.genesis).unwrap();
        let mut blocks = Vec::new();
        for stored in chain.engine.blocks_from(1, usize::MAX, usize::MAX) {
            writer.block(&stored).unwrap();
            let block = ledger::Block::from_bytes(&stored.block).unwrap();
            let kinds = block.entries().map(|entry| Envelope::from_bytes(entry).unwrap().kind().name()).collect();
            blocks.push((block.height(), kinds, block.header().state_root.to_string()));
        }
        writer.finish().unwrap();
        (bytes, blocks)
    }
}

/// PROTOCOL.md §12's every-kind vector: the lines of the block that starts with `every-kind-vector:`.
fn documented_every_kind() -> Vec<String> {
    protocol_md_block("every-kind-vector: ")
}

/// Issue 31, items 7 and 8: a chain holding every kind of ledger entry re-executes, block by block, to the state
/// roots PROTOCOL.md lists, from the export file in the repository — what an outside verifier checks itself against.
#[test]
fn the_every_kind_chain_re_executes_to_the_documented_state_roots() {
    let (bytes, blocks) = every_kind::chain();
    let mut produced = vec![
        "every-kind-vector: docs/vectors/every-kind.export".to_owned(),
        format!("file-bytes: {}", bytes.len()),
        format!("file-blake3: {}", blake3::hash(&bytes).to_hex()),
    ];
    for (height, kinds, root) in &blocks {
        let words: Vec<&str> = std::iter::once(root.as_str()).chain(kinds.iter().copied()).collect();
        produced.push(format!("block-{height}: {}", words.join(" ")));
    }
    if std::env::var_os("KOS_WRITE_VECTORS").is_some() {
        std::fs::write(every_kind::FILE, &bytes).unwrap();
    }
    if documented_every_kind() != produced {
        panic!("PROTOCOL.md §12's every-kind vector differs from the code's; the code makes:\n{}", produced.join("\n"));
    }
    let file = std::fs::read(every_kind::FILE).expect("docs/vectors/every-kind.export (KOS_WRITE_VECTORS=1 writes it)");
    assert!(file == bytes, "docs/vectors/every-kind.export differs from the chain the code makes");
    // Every kind of entry is in it, and a fresh re-execution of the file checks every block's state root.
    let kinds: std::collections::BTreeSet<&str> =
        blocks.iter().flat_map(|(_, kinds, _)| kinds.iter().copied()).collect();
    for kind in protocol::message::Kind::ALL {
        assert!(!ledger::state::is_entry_kind(*kind) || kinds.contains(kind.name()), "no {} in the chain", kind.name());
    }
    let genesis = export_genesis(&file);
    let verifier = verify_export(&mut file.as_slice(), Some(&genesis)).unwrap();
    assert_eq!(verifier.height(), blocks.len() as u64);
    let entry_kinds = protocol::message::Kind::ALL.iter().filter(|kind| ledger::state::is_entry_kind(**kind)).count();
    assert_eq!(verifier.kinds().len(), entry_kinds, "the re-execution counted every kind: {:?}", verifier.kinds());
}

/// The genesis an export carries.
fn export_genesis(file: &[u8]) -> Genesis {
    let mut input = file;
    ledger::verify::ExportReader::open(&mut input).unwrap().0
}
