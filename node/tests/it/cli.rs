//! `kos keys`, `kos offer sign` and `kos message verify` end to end, through the real binary.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn kos(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kos"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("KOS_KEY_FILE")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// `kos offer sign` of an energy ask in the u33db pool, with extra arguments.
fn sign_ask(data_dir: &Path, quantity: &str, price: &str, extra: &[&str]) -> Output {
    let mut args = vec!["offer", "sign", "--pool", "energy/credit/u33db/900", "--side", "ask"];
    args.extend(["--quantity", quantity, "--price", price]);
    args.extend_from_slice(extra);
    kos(data_dir, &args)
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn keys_are_generated_private_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let generated = kos(dir.path(), &["keys", "generate"]);
    assert!(generated.status.success(), "{}", stderr(&generated));
    let key_file = dir.path().join("node.key");
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);

    let shown = kos(dir.path(), &["keys", "show"]);
    assert!(shown.status.success());
    let shown_text = stdout(&shown);
    let public_key = field(&shown_text, "public key:");
    assert_eq!(public_key, field(&stdout(&generated), "public key:"));
    assert_eq!(public_key.len(), 64);
    assert!(field(&shown_text, "peer id:").starts_with("12D3KooW"));

    // A second generate does not silently replace the key.
    let again = kos(dir.path(), &["keys", "generate"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    assert_eq!(field(&stdout(&kos(dir.path(), &["keys", "show"])), "public key:"), public_key);
    let forced = kos(dir.path(), &["keys", "generate", "--force"]);
    assert!(forced.status.success());
    assert_ne!(field(&stdout(&forced), "public key:"), public_key);
}

#[test]
fn a_key_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(kos(dir.path(), &["keys", "generate"]).status.success());
    let key_file = dir.path().join("node.key");
    for mode in [0o644, 0o604, 0o660] {
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(mode)).unwrap();
        let shown = kos(dir.path(), &["keys", "show"]);
        assert!(!shown.status.success(), "mode {mode:o} accepted");
        assert!(stderr(&shown).contains("chmod 600"), "{}", stderr(&shown));
        let signed = sign_ask(dir.path(), "1", "0.3", &[]);
        assert!(!signed.status.success(), "a too-open key signed an offer");
    }
}

#[test]
fn a_missing_key_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let shown = kos(dir.path(), &["keys", "show"]);
    assert!(!shown.status.success());
    assert!(stderr(&shown).contains("kos keys generate"), "{}", stderr(&shown));
}

#[test]
fn signed_offers_verify_and_tampered_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    assert!(kos(dir.path(), &["keys", "generate"]).status.success());
    let public_key = field(&stdout(&kos(dir.path(), &["keys", "show"])), "public key:").to_owned();
    let out = dir.path().join("offer.cbor");
    let signed = sign_ask(dir.path(), "500", "0.305", &["--network", "kos-devnet", "--out", out.to_str().unwrap()]);
    assert!(signed.status.success(), "{}", stderr(&signed));

    let verified = kos(dir.path(), &["message", "verify", out.to_str().unwrap()]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    let text = stdout(&verified);
    assert!(text.starts_with("valid offer "), "{text}");
    assert_eq!(field(&text, "author:"), public_key);
    assert_eq!(field(&text, "quantity:"), "500");
    assert_eq!(field(&text, "price:"), "0.305 credit per kWh");

    let wrong_network = kos(dir.path(), &["message", "verify", out.to_str().unwrap(), "--network", "kos-testnet-1"]);
    assert!(!wrong_network.status.success());
    assert!(stderr(&wrong_network).contains("network kos-devnet"), "{}", stderr(&wrong_network));

    let mut bytes = std::fs::read(&out).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let tampered = dir.path().join("tampered.cbor");
    std::fs::write(&tampered, &bytes).unwrap();
    let rejected = kos(dir.path(), &["message", "verify", tampered.to_str().unwrap()]);
    assert!(!rejected.status.success());
    assert!(stderr(&rejected).contains("invalid message"), "{}", stderr(&rejected));
}

#[test]
fn hex_on_stdout_round_trips_and_garbage_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(kos(dir.path(), &["keys", "generate"]).status.success());
    let signed = kos(
        dir.path(),
        &["offer", "sign", "--pool", "compute/credit/*/0", "--side", "bid", "--quantity", "8000", "--price", "1.5"],
    );
    assert!(signed.status.success(), "{}", stderr(&signed));
    let hex_file = dir.path().join("offer.hex");
    std::fs::write(&hex_file, stdout(&signed)).unwrap();
    let verified = kos(dir.path(), &["message", "verify", hex_file.to_str().unwrap()]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert_eq!(field(&stdout(&verified), "price:"), "1.5 credit per credit");

    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, [0xff; 40]).unwrap();
    let rejected = kos(dir.path(), &["message", "verify", garbage.to_str().unwrap()]);
    assert!(!rejected.status.success());
    assert!(stderr(&rejected).contains("malformed"), "{}", stderr(&rejected));

    let bad_price = kos(
        dir.path(),
        &["offer", "sign", "--pool", "compute/credit/*/0", "--side", "bid", "--quantity", "1", "--price", "1.2345"],
    );
    assert!(!bad_price.status.success());
    assert!(stderr(&bad_price).contains("3 decimals"), "{}", stderr(&bad_price));
}

#[test]
fn vectors_command_matches_protocol_md() {
    let dir = tempfile::tempdir().unwrap();
    let vectors = stdout(&kos(dir.path(), &["protocol", "vectors"]));
    let protocol_md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md")).unwrap();
    assert!(protocol_md.ends_with(&vectors), "PROTOCOL.md must end with the output of `kos protocol vectors`");
}

/// `kos ledger verify --state` on PROTOCOL.md's every-kind chain (issue 31, item 8): it verifies, and says that the
/// re-execution exercised every kind of ledger entry, what it did, and what the state holds.
#[test]
fn verify_state_says_what_the_every_kind_chain_exercised() {
    let dir = tempfile::tempdir().unwrap();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/vectors/every-kind.export");
    let verified = kos(dir.path(), &["ledger", "verify", file, "--state"]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    let text = stdout(&verified);
    assert!(text.starts_with("verified 20 blocks, 43 entries\n"), "{text}");
    assert!(text.contains("\nentry kinds not exercised: none\n"), "{text}");
    assert!(text.contains("transfer 2, verdict 3, vote 4\n"), "{text}");
    assert!(
        text.contains("\neffects: alert raised 1, barter leg closed 2, barter settled 1, cell case decided 1,"),
        "{text}"
    );
    assert!(
        text.contains("override expired 1, override in force 1, penalty 2, proposal passed 4, proposal rejected 1, reading anchored 7, redistributed 2,"),
        "{text}"
    );
    assert!(text.contains("\nstate: 122 keys; by prefix: "), "{text}");
    // Without --state, none of it.
    let plain = stdout(&kos(dir.path(), &["ledger", "verify", file]));
    assert!(!plain.contains("entries by kind"), "{plain}");
}

/// The founders' command refuses what joiners could not use, and never overwrites a published genesis by accident;
/// `kos init` refuses a genesis hash that is not one.
#[test]
fn the_founders_command_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let key = protocol::Keypair::from_seed(&[3; 32]).public().to_hex();
    let out = dir.path().join("genesis.toml");
    let out_arg = out.to_str().unwrap();
    let genesis = |founder: &str, extra: &[&str]| {
        let mut args = vec!["ledger", "genesis", "--network", "kos-t", "--out", out_arg, "--founder", founder];
        args.extend_from_slice(extra);
        kos(dir.path(), &args)
    };
    for (founder, expected) in [
        (format!("{key}@/ip4/0.0.0.0/tcp/7070"), "not 0.0.0.0"),
        (format!("{key}@/ip4/203.0.113.7/udp/7070/quic-v1"), "/ip4/ADDRESS/tcp/PORT"),
        (format!("{key}@"), "/ip4/ADDRESS/tcp/PORT"),
        (
            format!("{key}@/ip4/203.0.113.7/tcp/7070/p2p/12D3KooWEo75C4mFb9dUN5cTGHtNopLnzq6TtWmhGd3uSaFDA9jz"),
            "without /p2p/",
        ),
        ("3cac@/ip4/203.0.113.7/tcp/7070".to_owned(), "hex"),
    ] {
        let refused = genesis(&founder, &[]);
        assert!(!refused.status.success(), "{founder} was taken");
        assert!(stderr(&refused).contains(expected), "{founder}: {}", stderr(&refused));
    }
    let founder = format!("{key}@/ip4/203.0.113.7/tcp/7070");
    assert!(genesis(&founder, &[]).status.success());
    let again = genesis(&founder, &[]);
    assert!(!again.status.success() && stderr(&again).contains("pass --force"), "{}", stderr(&again));
    assert!(genesis(&founder, &["--force"]).status.success());
    let hash = kos(dir.path(), &["ledger", "genesis-hash", out_arg]);
    assert_eq!(stdout(&hash).trim().len(), 64);
    let init = kos(&dir.path().join("node"), &["init", "--network", out_arg, "--genesis-hash", "not-hex"]);
    assert!(!init.status.success() && stderr(&init).contains("is not 64 hex digits"), "{}", stderr(&init));
    assert!(!dir.path().join("node").join("config.toml").exists());
}

/// `kos init` checks every input before it writes anything: a bad pool, bootnode or bootnodes file leaves no key,
/// no genesis and no config behind (before, the key and the genesis were written first).
#[test]
fn kos_init_writes_nothing_when_an_input_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = dir.path().join("genesis.toml");
    let key = protocol::Keypair::from_seed(&[4; 32]).public().to_hex();
    let written = kos(dir.path(), &["ledger", "genesis", "--validator", &key, "--out", genesis.to_str().unwrap()]);
    assert!(written.status.success(), "{}", stderr(&written));
    let bad_list = dir.path().join("elsewhere.txt");
    std::fs::write(&bad_list, "not a multiaddr\n").unwrap();
    let node = dir.path().join("node");
    for (args, expected) in [
        (vec!["--pool", "energy/credit/u33db"], "--pool"),
        (vec!["--bootnode", "nowhere"], "--bootnode"),
        (vec!["--bootnodes", bad_list.to_str().unwrap()], "is not a multiaddr"),
    ] {
        let mut all = vec!["init", "--network", genesis.to_str().unwrap()];
        all.extend(args);
        let refused = kos(&node, &all);
        assert!(!refused.status.success() && stderr(&refused).contains(expected), "{all:?}: {}", stderr(&refused));
        assert!(!node.exists() || std::fs::read_dir(&node).unwrap().next().is_none(), "{all:?} wrote into {node:?}");
    }
}
