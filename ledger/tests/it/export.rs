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

/// PROTOCOL.md's export vector: the lines of the block that starts with `export-vector:`.
fn documented() -> BTreeMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md");
    let text = std::fs::read_to_string(path).expect("PROTOCOL.md at the repository root");
    let mut block = BTreeMap::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("export-vector: ") {
            inside = true;
        } else if inside && line.starts_with("```") {
            break;
        }
        if inside && let Some((key, value)) = line.split_once(": ") {
            block.insert(key.to_owned(), value.to_owned());
        }
    }
    block
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
