//! Issue 25: the holes an outside review of a running devnet found, each tried against real `kos run` processes
//! (and, where a hostile peer is needed, a libp2p node in this process speaking kos's protocols).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::ledger::consensus::Signer;
use ::ledger::consensus::context::{Address, Height, Vote};
use ::ledger::consensus::wire::Message;
use kos::network::local::{self, Transport};
use kos::network::{BlockSource, Topic};
use kos_tests::cli::{keys, kos, wait_until};
use kos_tests::cluster::{Node, STARTUP, json};
use kos_tests::process::{Process, kos_binary};
use malachite_types::{NilOrVal, Round, SigningProvider, VoteType};
use protocol::NetworkId;

/// A one-validator network `kos-devnet` in `root`, its validator funded: the validator's directory (keys, genesis)
/// and its public key.
fn one_validator(root: &Path) -> (std::path::PathBuf, String, String) {
    let dir = root.join("validator");
    let (key, peer) = keys(&dir);
    let genesis = dir.join("genesis.toml");
    let out = genesis.to_str().unwrap();
    kos(&["ledger", "genesis", "--network", "kos-devnet", "--out", out, "--validator", &key, "--fund", &key]);
    (dir, key, peer)
}

/// Defect 7: `POST /offers` joined the pool's topic and announced the pool before the offer was checked, and said
/// 202 for offers the market refused (a pool of an unknown token, 400 pools: all 202, all joined). Now nothing is
/// joined, announced or gossiped before the market takes the offer, and the answer is the market's verdict.
#[test]
fn offers_are_checked_before_anything_is_joined_and_get_the_markets_verdict() {
    let root = tempfile::tempdir().unwrap();
    let (dir, key, peer) = one_validator(root.path());
    let node = Node::start(&dir, &key, &peer, &[], &[]);
    assert!(wait_until(STARTUP, || node.height() >= Some(1)), "no blocks");
    let topics = || node.get("/status").unwrap()["topics"].as_u64().unwrap();
    let served = || node.get("/status").unwrap()["served_pools"].as_array().unwrap().len();
    let (topics_before, served_before) = (topics(), served());
    let offer = |pool: &str, side: &str, extra: serde_json::Value| {
        let mut body = serde_json::json!({ "pool": pool, "side": side, "quantity": 100, "price": "0.25" });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        node.post("/offers", &body)
    };

    // A token the genesis does not know: refused, and nothing joined.
    let (status, answer) = offer("energy/doge/u33db/900", "bid", serde_json::json!({}));
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("doge"), "{answer}");
    // A delivery beyond the horizon, and one after the offer expires: refused by the same rule as at the door.
    let far = serde_json::json!({ "delivery_start": 900 * 10_000_000u64 });
    let (status, answer) = offer("energy/credit/u33db/900", "bid", far);
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("delivery"), "{answer}");
    let now_s = kos_tests::now_ms() / 1000;
    let later = serde_json::json!({ "delivery_start": (now_s / 900 + 4) * 900, "expires_in_s": 60 });
    let (status, answer) = offer("energy/credit/u33db/900", "ask", later);
    assert_eq!(status, 400, "{answer}");
    assert_eq!((topics(), served()), (topics_before, served_before), "refused offers joined nothing");

    // A good offer: 202, its pool joined and announced once.
    let (status, answer) = offer("energy/credit/u33db/900", "bid", serde_json::json!({}));
    assert_eq!(status, 202, "{answer}");
    assert!(answer["expires_ms"].as_u64().unwrap() >= answer["delivery_start"].as_u64().unwrap() * 1000);
    assert_eq!((topics(), served()), (topics_before + 1, served_before + 1));

    // The author's open offers in a pool are bounded: past them, 429 with the reason.
    let mut last = (0, serde_json::Value::Null);
    for _ in 0..300 {
        last = offer("compute/credit/*/0", "ask", serde_json::json!({ "price": "1000" }));
        if last.0 != 202 {
            break;
        }
    }
    assert_eq!(last.0, 429, "{:?}", last.1);
    assert!(last.1["error"].as_str().unwrap().contains("too many open offers"), "{:?}", last.1);

    // Pools are bounded too: a node takes part in at most 64; the 65th distinct pool is refused (503), not joined.
    let mut refused = None;
    for cell in 0..80u32 {
        let pool = format!("energy/credit/u{cell:04}/0");
        let (status, answer) = offer(&pool, "bid", serde_json::json!({}));
        if status != 202 {
            refused = Some((status, answer));
            break;
        }
    }
    let (status, answer) = refused.expect("every pool was taken");
    assert_eq!(status, 503, "{answer}");
    assert!(topics() <= kos::network::TOPICS_MAX as u64);
}

/// Defect 9: an API bound beyond loopback started without a word about its token travelling in clear text.
#[test]
fn an_api_beyond_loopback_warns_that_its_token_travels_in_clear_text() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let api = format!("0.0.0.0:{port}");
    let args = ["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "false", "--api", &api];
    let node = Process::kos(&kos_binary(), dir.path(), &args).unwrap();
    let warned = node.wait_for_line(STARTUP, |line| line.contains("WARN") && line.contains("clear text"));
    assert!(warned.is_some(), "{:#?}", node.lines());
    let quiet = tempfile::tempdir().unwrap();
    keys(quiet.path());
    let args = ["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "false", "--api", "127.0.0.1:0"];
    let local = Process::kos(&kos_binary(), quiet.path(), &args).unwrap();
    assert!(local.wait_for_line(STARTUP, |line| line.contains("API listening")).is_some());
    assert!(!local.lines().iter().any(|line| line.contains("clear text")), "{:#?}", local.lines());
}

/// Opens an event stream and reads its response head; the stream stays open.
fn open_stream(api: &str) -> TcpStream {
    let mut stream = TcpStream::connect(api).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /events HTTP/1.1\r\nHost: {api}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the stream closed: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
}

/// Defect 9: one local client could hold all 64 event streams and lock the dashboard out (503). A new stream now
/// takes the place of the oldest, so the dashboard always gets one (its stream reconnects by itself).
#[test]
fn one_client_cannot_hold_every_event_stream() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    let args = ["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "false", "--api", "127.0.0.1:0"];
    let node = Process::kos(&kos_binary(), dir.path(), &args).unwrap();
    let api = node.wait_for_field(STARTUP, "API listening", "address").unwrap();
    let mut hogged: Vec<TcpStream> = (0..kos::api::live::EVENT_STREAMS_MAX).map(|_| open_stream(&api)).collect();
    // The dashboard's stream still opens...
    let _dashboard = open_stream(&api);
    // ...and the oldest of the hog's streams was ended to make room (its chunked body's last chunk).
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    hogged[0].set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    while Instant::now() < deadline && !received.windows(5).any(|window| window == b"0\r\n\r\n") {
        let mut buffer = [0u8; 512];
        match hogged[0].read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(_) => {}
        }
    }
    assert!(
        received.windows(5).any(|window| window == b"0\r\n\r\n"),
        "the oldest stream was not ended: {:?}",
        String::from_utf8_lossy(&received)
    );
    // The others stay open.
    for stream in hogged.iter_mut().skip(1) {
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        assert!(!matches!(stream.read(&mut byte), Ok(0)), "a newer stream was closed");
    }
}

/// Defect 4: the API held slow and idle connections forever and had no cap: 1,100 of them used every descriptor,
/// and the libp2p listener then failed with "Too many open files". A node limited to 1,024 descriptors, held by
/// 1,100 slow clients, still takes a new peer and answers `/status`.
#[test]
fn slow_api_clients_cannot_starve_the_node_of_descriptors() {
    let root = tempfile::tempdir().unwrap();
    keys(root.path());
    let kos = kos_binary();
    let script = format!(
        "ulimit -n 1024 && exec {} --data-dir {} run --listen /ip4/127.0.0.1/tcp/0 --mdns false --api 127.0.0.1:0 --log info",
        kos.display(),
        root.path().display()
    );
    let mut command = Command::new("sh");
    command.args(["-c", &script]).env_remove("RUST_LOG").env_remove("KOS_KEY_FILE");
    let node = Process::start(command).unwrap();
    let api = node.wait_for_field(STARTUP, "API listening", "address").expect("no API address");
    let p2p = node.wait_for_field(STARTUP, "listening", "address").expect("no p2p address");
    let peer_id = node.wait_for_field(STARTUP, "kos node started", "peer_id").expect("no peer id");

    // 1,100 clients that each send half a request header and then nothing, held open (this test may open that many).
    kos::api::server::raise_file_limit();
    let mut slow = Vec::new();
    for _ in 0..1_100 {
        if let Ok(mut stream) = TcpStream::connect(&api) {
            let _ = stream.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n");
            slow.push(stream);
        }
    }
    assert!(slow.len() >= 1_000, "only {} connections opened", slow.len());

    // /status still answers, promptly.
    let started = Instant::now();
    let status = json(&api, "/status");
    assert!(status.is_some(), "/status did not answer: {:#?}", node.lines().iter().rev().take(20).collect::<Vec<_>>());
    assert!(started.elapsed() < Duration::from_secs(5), "/status took {:?}", started.elapsed());

    // A new peer still connects over libp2p.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let network = NetworkId::new("kos-devnet").unwrap();
    let connected = runtime.block_on(async {
        let peer = local::start(7_001, &network, Transport::Tcp, |config| config.kademlia = false).await.unwrap();
        let address: libp2p::Multiaddr = format!("{p2p}/p2p/{peer_id}").parse().unwrap();
        peer.handle.dial(address).await.unwrap();
        kos::network::wait_for(Duration::from_secs(10), || async {
            peer.handle.info().await.is_ok_and(|info| !info.peers.is_empty())
        })
        .await
    });
    assert!(connected, "a new peer could not connect: {:#?}", node.lines().iter().rev().take(20).collect::<Vec<_>>());
    assert!(
        !node.lines().iter().any(|line| line.contains("Too many open files")),
        "{:#?}",
        node.lines().iter().filter(|line| line.contains("Too many")).collect::<Vec<_>>()
    );
    // The slow clients are cut off: after the header timeout each reads the end of its connection (after an answer,
    // if any) or a reset. The burst overflowed the kernel's listen queue of 1,024: a connection it dropped is reset
    // when the client sends again, and one whose handshake finished on a retry is accepted late and timed from then.
    // So each is read until a deadline; only a read that times out is a connection the node still holds open.
    let deadline = Instant::now() + kos::api::server::HEADER_READ_TIMEOUT * 3 + Duration::from_secs(15);
    std::thread::sleep(kos::api::server::HEADER_READ_TIMEOUT);
    let mut open: Vec<TcpStream> = slow;
    let total = open.len();
    while !open.is_empty() && Instant::now() < deadline {
        open.retain_mut(|stream| {
            stream.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let mut buffer = [0u8; 256];
            // Bytes before the end (an answer) leave it to be read again; the end or a reset closes it.
            match stream.read(&mut buffer) {
                Ok(read) => read > 0,
                Err(error) => matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            }
        });
    }
    assert!(open.is_empty(), "{} of {total} slow connections were still open at the deadline", open.len());
}

/// Defect 4, the busy side: connections that hold an event stream, or a write's body sent slowly without the token,
/// must not become connections that can never give way. 130 clients each open a stream (more than the node's 128
/// connections at 1,024 descriptors), and 100 send a write's header with a large body they never finish: `/status`
/// still answers.
#[test]
fn streaming_and_slow_writing_clients_cannot_lock_out_the_api() {
    let root = tempfile::tempdir().unwrap();
    keys(root.path());
    let script = format!(
        "ulimit -n 1024 && exec {} --data-dir {} run --listen /ip4/127.0.0.1/tcp/0 --mdns false --api 127.0.0.1:0",
        kos_binary().display(),
        root.path().display()
    );
    let mut command = Command::new("sh");
    command.args(["-c", &script]).env_remove("RUST_LOG").env_remove("KOS_KEY_FILE");
    let node = Process::start(command).unwrap();
    let api = node.wait_for_field(STARTUP, "API listening", "address").expect("no API address");
    let connections_max: usize =
        node.wait_for_field(STARTUP, "API listening", "connections_max").unwrap().parse().unwrap();
    assert_eq!(connections_max, 128);
    let mut held = Vec::new();
    for _ in 0..130 {
        let mut stream = TcpStream::connect(&api).unwrap();
        write!(stream, "GET /events HTTP/1.1\r\nHost: {api}\r\n\r\n").unwrap();
        held.push(stream);
    }
    for _ in 0..100 {
        let mut stream = TcpStream::connect(&api).unwrap();
        write!(stream, "POST /offers HTTP/1.1\r\nHost: {api}\r\nContent-Length: 1000000\r\n\r\n{{\"po").unwrap();
        held.push(stream);
    }
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let status = json(&api, "/status");
    assert!(status.is_some(), "/status did not answer: {:#?}", node.lines().iter().rev().take(20).collect::<Vec<_>>());
    assert!(started.elapsed() < Duration::from_secs(5), "/status took {:?}", started.elapsed());
    // A slow write without the token was refused before its body was read.
    let mut answer = [0u8; 12];
    held.last_mut().unwrap().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    held.last_mut().unwrap().read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 401");
}

/// Defect 2: a consensus message of a later height moved the sync target before anything checked who signed it,
/// the node forwarded it, and a sync reply's claimed tip was trusted; the target only ever rose. One forged vote of
/// height 2^64 − 1, or one peer claiming blocks it never serves, left every node "syncing" for good. Now the forged
/// vote is rejected and not forwarded, a genuine validator's vote of a later height starts a sync, the lying peer is
/// penalised for its empty answer, and the node, finding nothing to fetch, stops syncing.
#[test]
fn a_forged_far_vote_and_a_lying_peer_do_not_keep_a_node_syncing() {
    let root = tempfile::tempdir().unwrap();
    let (validator_dir, validator_key, _) = one_validator(root.path());
    let validator = kos::keyfile::read(&validator_dir.join("node.key")).unwrap();
    // The node under attack follows the one-validator network, whose validator is not running.
    let dir = root.path().join("node");
    let (key, peer) = keys(&dir);
    std::fs::copy(validator_dir.join("genesis.toml"), dir.join("genesis.toml")).unwrap();
    let node = Node::start(&dir, &key, &peer, &[], &["--log", "info,kos::ledger=debug"]);
    let address: libp2p::Multiaddr = node.bootnode().parse().unwrap();
    assert_eq!(validator.public().to_hex(), validator_key);

    let network = NetworkId::new("kos-devnet").unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        // The liar serves no block but claims the end of time; a watcher takes the consensus messages it is sent.
        let liar = local::start(7_101, &network, Transport::Tcp, |config| {
            config.kademlia = false;
            config.blocks = Some(BlockSource(Arc::new(|_, _, _| (u64::MAX, 1, Vec::new()))));
        })
        .await
        .unwrap();
        let (consensus, mut watched) = tokio::sync::mpsc::channel(64);
        let watcher = local::start(7_102, &network, Transport::Tcp, |config| {
            config.kademlia = false;
            config.consensus = Some(consensus.clone());
        })
        .await
        .unwrap();
        for peer in [&liar, &watcher] {
            peer.handle.subscribe(Topic::Consensus).await.unwrap();
            peer.handle.dial(address.clone()).await.unwrap();
        }
        let meshed = kos::network::wait_for(Duration::from_secs(20), || async {
            liar.handle.topic_peers(Topic::Consensus).await.is_ok_and(|peers| !peers.is_empty())
        })
        .await;
        assert!(meshed, "the liar joined no consensus mesh");

        let signer = Signer::new(network.clone(), validator.seed());
        let vote = |height: u64| Vote {
            height: Height(height),
            round: Round::new(0),
            vote_type: VoteType::Precommit,
            value: NilOrVal::Nil,
            validator: Address(validator.public()),
        };
        // A forged vote at the end of time: the validator's vote with a bit of its signature (the message's last 64
        // bytes) flipped.
        let mut forged = Message::Vote(signer.sign_vote(vote(u64::MAX))).to_bytes();
        let at = forged.len() - 20;
        forged[at] ^= 0x20;
        liar.handle.publish_bytes(Topic::Consensus, forged.clone()).await.unwrap();
        // Then a genuine vote of height 5: peers decided heights this node has not.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let real = Message::Vote(signer.sign_vote(vote(5))).to_bytes();
        liar.handle.publish_bytes(Topic::Consensus, real.clone()).await.unwrap();

        // The node forwards the genuine vote to the watcher, never the forgery.
        let forwarded = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let delivery = watched.recv().await.unwrap();
                assert_ne!(delivery.bytes, forged, "the forged vote was forwarded");
                if delivery.bytes == real {
                    return;
                }
            }
        })
        .await;
        assert!(forwarded.is_ok(), "the genuine vote was not forwarded");
        // The genuine vote started a sync; the liar's empty claim is seen for the lie it is (while it is connected).
        let lie = kos::network::wait_for(Duration::from_secs(20), || async {
            node.process.lines().iter().any(|line| line.contains("claimed blocks it does not serve"))
        })
        .await;
        assert!(lie, "{:#?}", node.process.lines());
        drop((liar, watcher));
    });
    // ...and with nobody serving a block, the node is not left syncing (towards 2^64 − 2 or anything).
    let mut status = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            status = node.get("/status").unwrap_or_default();
            status["ledger"]["syncing_to"].is_null() && status["ledger"]["height"] == 0
        }),
        "{status:#}"
    );
}
