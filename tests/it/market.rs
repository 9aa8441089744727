//! The market with real processes: four `kos run` validators on loopback serving a compute pool (continuous double
//! auction) and an energy pool (15-second interval auctions). Homes post offers through their node's API; the
//! matches end as settlement entries on every node's ledger, with balances moved and the grid fee and commons tax
//! applied, and the energy trade's escrow held and released. Two homes' barter offers close a cycle that is
//! settled on every ledger.

use std::path::PathBuf;
use std::time::Duration;

use kos_tests::cli::{keys, kos, wait_until};
use kos_tests::http;
use kos_tests::process::{Process, kos_binary};

const STARTUP: Duration = Duration::from_secs(30);
const FUNDS: u64 = 1_000_000_000;
const COMPUTE: &str = "compute/credit/*/0";
const ENERGY: &str = "energy/credit/u33db/15";
const COMMONS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

struct Node {
    dir: PathBuf,
    key: String,
    peer: String,
    process: Option<Process>,
    api: String,
    token: String,
}

fn json(api: &str, path: &str) -> Option<serde_json::Value> {
    let response = http::get(api, path).ok()?;
    if response.status != 200 {
        return None;
    }
    serde_json::from_slice(&response.body).ok()
}

fn balance(api: &str, account: &str) -> Option<u64> {
    let value = json(api, &format!("/accounts/{account}/balances"))?;
    Some(value["balances"]["credit"].as_u64().unwrap_or(0))
}

fn post_offer(node: &Node, body: serde_json::Value) -> serde_json::Value {
    let authorization = format!("Bearer {}", node.token);
    let response = http::request(
        &node.api,
        "POST",
        "/offers",
        &[("Authorization", &authorization), ("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(response.status, 202, "{}", response.text());
    serde_json::from_slice(&response.body).unwrap()
}

/// Waits until every node reports `expected` credits for each account; returns what they report.
fn balances_settle(nodes: &[Node], expected: &[(&str, u64)], timeout: Duration) -> Vec<Vec<Option<u64>>> {
    let read = || -> Vec<Vec<Option<u64>>> {
        nodes.iter().map(|node| expected.iter().map(|(account, _)| balance(&node.api, account)).collect()).collect()
    };
    wait_until(timeout, || {
        read().iter().all(|row| row.iter().zip(expected).all(|(got, (_, want))| *got == Some(*want)))
    });
    read()
}

#[test]
fn homes_offers_end_as_settled_entries_on_every_ledger() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for index in 0..4 {
        let dir = root.path().join(format!("home{index}"));
        let (key, peer) = keys(&dir);
        nodes.push(Node { dir, key, peer, process: None, api: String::new(), token: String::new() });
    }
    let genesis = root.path().join("genesis.toml");
    let mut args = vec!["ledger", "genesis", "--network", "kos-devnet", "--out", genesis.to_str().unwrap()];
    for node in &nodes {
        args.extend(["--validator", &node.key, "--fund", &node.key]);
    }
    kos(&args);
    // Market rules: a constant grid fee of 1 credit per compute unit, 1 % commons tax, quick escrow release.
    let mut text = std::fs::read_to_string(&genesis).unwrap();
    let params_at = text.find("[params]");
    let params = "commons_tax_ppm = 10000\nsettlement_grace_ms = 2000\n";
    match params_at {
        Some(at) => text.insert_str(at + "[params]\n".len(), params),
        None => text.push_str(&format!("\n[params]\n{params}")),
    }
    text.push_str(&format!("\n[[pools]]\npool = \"{COMPUTE}\"\ngrid_fee_per_kwh = 1000\n"));
    std::fs::write(&genesis, text).unwrap();
    let mut bootnodes: Vec<String> = Vec::new();
    for node in &mut nodes {
        std::fs::copy(&genesis, node.dir.join("genesis.toml")).unwrap();
        let mut args = vec![
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--mdns",
            "false",
            "--api",
            "127.0.0.1:0",
            "--pool",
            COMPUTE,
            "--pool",
            ENERGY,
            "--log",
            "info",
        ];
        for bootnode in &bootnodes {
            args.extend(["--bootnode", bootnode]);
        }
        let process = Process::kos(&kos_binary(), &node.dir, &args).unwrap();
        node.api = process.wait_for_field(STARTUP, "API listening", "address").expect("no API address");
        let p2p = process.wait_for_field(STARTUP, "listening", "address").unwrap();
        bootnodes.push(format!("{p2p}/p2p/{}", node.peer));
        node.token = std::fs::read_to_string(node.dir.join("api.token")).unwrap().trim().to_owned();
        node.process = Some(process);
    }
    assert!(
        wait_until(STARTUP, || nodes.iter().all(|node| json(&node.api, "/status")
            .is_some_and(|status| status["ledger"]["height"].as_u64().unwrap_or(0) >= 2))),
        "the validators did not start committing: {:#?}",
        nodes[0].process.as_ref().unwrap().lines()
    );
    // Gossipsub meshes form on heartbeats: give the pool topics a moment.
    std::thread::sleep(Duration::from_secs(3));

    // Compute: home 1 sells 2 units at 5 credits; home 2 bids 7 for them. The ask rests; the bid takes it at 5.
    let (seller, buyer) = (&nodes[1], &nodes[2]);
    post_offer(seller, serde_json::json!({"pool": COMPUTE, "side": "ask", "quantity": 2000, "price": "5"}));
    std::thread::sleep(Duration::from_secs(2));
    post_offer(buyer, serde_json::json!({"pool": COMPUTE, "side": "bid", "quantity": 2000, "price": "7"}));
    // Value 10 credits; the buyer also pays the 2 credit grid fee; the seller pays 1 % tax (0.1).
    let expected = [(buyer.key.as_str(), FUNDS - 12_000), (seller.key.as_str(), FUNDS + 9_900), (COMMONS, 2_100)];
    let seen = balances_settle(&nodes, &expected, Duration::from_secs(30));
    assert!(
        seen.iter().all(|row| row.iter().zip(&expected).all(|(got, (_, want))| *got == Some(*want))),
        "balances after the compute trade: {seen:?}, want {expected:?}\nseller log: {:#?}",
        seller.process.as_ref().unwrap().lines()
    );
    let index = json(&nodes[0].api, &format!("/pools/index?pool={COMPUTE}")).unwrap();
    assert_eq!(index["periods"][0]["vwap"], 5_000, "{index}");
    assert_eq!(index["periods"][0]["volume"], 2_000, "{index}");

    // Energy: home 3 offers 1 kWh at 100 credits/kWh, home 0 bids 300 for the next 15 s interval that leaves time
    // to gossip before its gate closes (5 s before it starts). Pay-as-clear: 200.
    let (seller, buyer) = (&nodes[3], &nodes[0]);
    let now_s = kos_tests::now_ms() / 1000;
    let delivery_start = (now_s + 12).div_ceil(15) * 15;
    let offer = |side: &str, price: &str| serde_json::json!({"pool": ENERGY, "side": side, "quantity": 1000, "price": price, "delivery_start": delivery_start});
    post_offer(seller, offer("ask", "100"));
    post_offer(buyer, offer("bid", "300"));
    let book = json(&buyer.api, &format!("/pools/book?pool={ENERGY}"));
    assert!(book.is_some_and(|book| book["book"]["offers"].as_u64().unwrap_or(0) >= 1));
    // Cleared at the gate and settled by the seller: the value (200) and 10 % collateral from each party wait in
    // escrow until the interval is over (plus 2 s grace).
    let escrowed = [(buyer.key.as_str(), FUNDS - 220_000), (seller.key.as_str(), FUNDS - 20_000)];
    let deadline = Duration::from_secs(delivery_start.saturating_sub(now_s) + 10);
    let seen = balances_settle(&nodes, &escrowed, deadline);
    let released = [(buyer.key.as_str(), FUNDS - 200_000), (seller.key.as_str(), FUNDS + 198_000)];
    if !seen.iter().all(|row| row.iter().zip(&escrowed).all(|(got, (_, want))| *got == Some(*want))) {
        // The release may already have happened when the escrowed balances were first read.
        let now = balances_settle(&nodes, &released, Duration::from_secs(1));
        assert!(
            now.iter().all(|row| row.iter().zip(&released).all(|(got, (_, want))| *got == Some(*want))),
            "balances while escrowed: {seen:?}, want {escrowed:?}\nseller log: {:#?}",
            seller.process.as_ref().unwrap().lines()
        );
    }
    // Neither home anchored readings, so each under-delivered (or under-consumed) the full kWh: each pays the
    // other 0.1 credit from its collateral (1 kWh × 0.1 credit/kWh), which cancels out. The seller pays 1 % tax.
    let seen = balances_settle(&nodes, &released, Duration::from_secs(30));
    assert!(
        seen.iter().all(|row| row.iter().zip(&released).all(|(got, (_, want))| *got == Some(*want))),
        "balances after release: {seen:?}, want {released:?}"
    );
    let commons = balance(&nodes[2].api, COMMONS);
    assert_eq!(commons, Some(2_100 + 2_000), "grid fee and tax of both trades");
    let index = json(&nodes[2].api, &format!("/pools/index?pool={ENERGY}")).unwrap();
    assert_eq!(index["periods"][0]["period"], delivery_start, "{index}");
    assert_eq!(index["periods"][0]["vwap"], 200_000, "{index}");
    assert!(seller.process.as_ref().unwrap().lines().iter().any(|line| line.contains("interval auction cleared")));

    // Barter without tokens: home 0 gives 1 kWh for 0.5 compute units, home 1 the reverse. The node of the cycle's
    // first leg (lowest offer id) submits it; it lands on every ledger.
    let barter = |node: &Node, give: &str, give_quantity: u64, want: &str, want_quantity: u64| {
        let authorization = format!("Bearer {}", node.token);
        let body = serde_json::json!({"give": give, "give_quantity": give_quantity, "want": want,
            "want_quantity": want_quantity, "cell": "u33db"});
        let response = http::request(
            &node.api,
            "POST",
            "/barter",
            &[("Authorization", &authorization), ("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(response.status, 202, "{}", response.text());
    };
    barter(&nodes[0], "energy", 1000, "compute", 500);
    barter(&nodes[1], "compute", 500, "energy", 1000);
    let mut cycle_id = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            cycle_id = nodes[..2].iter().find_map(|node| {
                node.process.as_ref().unwrap().lines().iter().find_map(|line| {
                    let at = line.find("settling a barter cycle")?;
                    let rest = &line[at..];
                    let start = rest.find("cycle=")? + "cycle=".len();
                    Some(rest[start..start + 64].to_owned())
                })
            });
            cycle_id.is_some()
        }),
        "no barter cycle was submitted"
    );
    let cycle_id = cycle_id.unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || nodes.iter().all(|node| http::get(
            &node.api,
            &format!("/entries/{cycle_id}")
        )
        .is_ok_and(|r| r.status == 200))),
        "barter cycle {cycle_id} is not on every ledger"
    );
}

/// The griefing drill with real processes (issue 26): a hostile libp2p peer floods the compute pool of a running
/// network with the best bids of an account that holds nothing, while two homes trade. No node takes the flood
/// into its book (each checks every offer with its ledger, as the settlement will), so the homes' ask meets the
/// honest bid, not the flood, and the trade settles on every ledger. A home whose account holds nothing is told so
/// by its own node: 402 with the reason.
#[test]
fn a_flood_of_unfunded_offers_takes_nothing_from_honest_homes() {
    use kos::network::Topic;
    use kos::network::local::{self, Transport};
    use kos_tests::cluster::Node as Running;
    use protocol::message::{Body, Offer, PoolId, Side};
    use protocol::{Draft, Keypair, NetworkId};

    let root = tempfile::tempdir().unwrap();
    let names = ["validator", "seller", "buyer", "poor"];
    let keyed: Vec<(PathBuf, String, String)> = names
        .iter()
        .map(|name| {
            let dir = root.path().join(name);
            let (key, peer) = keys(&dir);
            (dir, key, peer)
        })
        .collect();
    let genesis = root.path().join("genesis.toml");
    let genesis_text = genesis.to_str().unwrap();
    kos(&[
        "ledger",
        "genesis",
        "--network",
        "kos-devnet",
        "--out",
        genesis_text,
        "--validator",
        &keyed[0].1,
        "--fund",
        &keyed[0].1,
        "--fund",
        &keyed[1].1,
        "--fund",
        &keyed[2].1,
    ]);
    let mut nodes: Vec<Running> = Vec::new();
    for (dir, key, peer) in &keyed {
        std::fs::copy(&genesis, dir.join("genesis.toml")).unwrap();
        let bootnodes: Vec<String> = nodes.first().map(Running::bootnode).into_iter().collect();
        nodes.push(Running::start(dir, key, peer, &bootnodes, &["--pool", "compute/credit/u33db/0", "--log", "info"]));
    }
    assert!(wait_until(STARTUP, || nodes.iter().all(|node| node.height() >= Some(2))), "no blocks");

    let network = NetworkId::new("kos-devnet").unwrap();
    let pool: PoolId = "compute/credit/u33db/0".parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let flooded = runtime.block_on(async {
        let attacker = local::start(7_201, &network, Transport::Tcp, |config| config.kademlia = false).await.unwrap();
        attacker.handle.subscribe(Topic::pool(&pool)).await.unwrap();
        for node in &nodes[..3] {
            attacker.handle.dial(node.bootnode().parse().unwrap()).await.unwrap();
        }
        // The homes join the pool's topic when they first trade in it: the seller's ask rests first.
        let (status, answer) = nodes[1].post(
            "/offers",
            &serde_json::json!({"pool": "compute/credit/u33db/0", "side": "ask", "quantity": 2000, "price": "5"}),
        );
        assert_eq!(status, 202, "{answer}");
        let meshed = kos::network::wait_for(Duration::from_secs(20), || async {
            attacker.handle.topic_peers(Topic::pool(&pool)).await.is_ok_and(|peers| peers.len() >= 2)
        })
        .await;
        assert!(meshed, "the attacker joined no pool mesh");
        let unfunded = Keypair::from_seed(&[77; 32]);
        let now_ms = kos_tests::now_ms();
        for nonce in 1..=20u64 {
            let offer =
                Offer { pool: pool.clone(), side: Side::Bid, quantity: 2000, unit_price: 100_000, delivery_start_s: 0 };
            let body = Body::Offer(offer);
            let draft =
                Draft { network: network.clone(), nonce, created_ms: now_ms, expires_ms: now_ms + 600_000, body };
            let envelope = draft.sign(&unfunded);
            attacker.handle.publish_bytes(Topic::pool(&pool), envelope.to_bytes()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Every node that saw the flood refused it: their books hold the honest ask alone.
        let mut refused = Vec::new();
        for node in &nodes[..3] {
            let pools = node.get("/pools").unwrap_or_default();
            refused.push(pools["unsettleable"].as_u64().unwrap_or(0));
            let book = node.get("/pools/book?pool=compute/credit/u33db/0").unwrap_or_default();
            assert!(book["book"]["bids"].as_array().is_none_or(Vec::is_empty), "the flood is in a book: {book}");
        }
        drop(attacker);
        refused
    });
    assert!(flooded.iter().any(|refused| *refused >= 10), "no node refused the flood: {flooded:?}");

    // The honest bid meets the honest ask: 2 units at 5 credits, settled on every ledger.
    let (status, answer) = nodes[2].post(
        "/offers",
        &serde_json::json!({"pool": "compute/credit/u33db/0", "side": "bid", "quantity": 2000, "price": "7"}),
    );
    assert_eq!(status, 202, "{answer}");
    let (seller, buyer) = (nodes[1].key.clone(), nodes[2].key.clone());
    let settled = wait_until(Duration::from_secs(30), || {
        nodes[..3].iter().all(|node| {
            balance(&node.api, &seller) == Some(FUNDS + 10_000) && balance(&node.api, &buyer) == Some(FUNDS - 10_000)
        })
    });
    assert!(settled, "the honest trade did not settle: {:#?}", nodes[1].process.lines());

    // A home that holds nothing is told so by its own node, before anything is gossiped.
    let (status, answer) = nodes[3].post(
        "/offers",
        &serde_json::json!({"pool": "compute/credit/u33db/0", "side": "bid", "quantity": 1000, "price": "1"}),
    );
    assert_eq!((status, answer["reason"].as_str()), (402, Some("insufficient_funds")), "{answer}");
}

/// Keys for each of `names` in its own directory under `root` (data directory, public key, peer id), and one genesis
/// for them all in each directory: the first is the only validator, and every account is funded.
fn one_validator_network(root: &std::path::Path, names: &[&str]) -> Vec<(PathBuf, String, String)> {
    let keyed: Vec<(PathBuf, String, String)> = names
        .iter()
        .map(|name| {
            let dir = root.join(name);
            let (key, peer) = keys(&dir);
            (dir, key, peer)
        })
        .collect();
    let genesis = root.join("genesis.toml");
    let mut args = vec!["ledger", "genesis", "--network", "kos-devnet", "--out", genesis.to_str().unwrap()];
    args.extend(["--validator", &keyed[0].1]);
    for (_, key, _) in &keyed {
        args.extend(["--fund", key.as_str()]);
    }
    kos(&args);
    for (dir, ..) in &keyed {
        std::fs::copy(&genesis, dir.join("genesis.toml")).unwrap();
    }
    keyed
}

/// A node whose ledger is not current (here: its network's validator is down, so no block comes) checks nothing
/// against it: its own offer is refused with a 503 that says why, and no gossiped offer is booked until it is.
/// Before, the offer was checked against the state of its last commit, however old, and booked.
#[test]
fn a_node_whose_ledger_is_behind_books_no_offer() {
    use kos_tests::cluster::Node as Running;

    let root = tempfile::tempdir().unwrap();
    let keyed = one_validator_network(root.path(), &["validator", "home"]);
    let (dir, key, peer) = &keyed[1];
    let home = Running::start(dir, key, peer, &[], &[]);
    assert!(wait_until(STARTUP, || home.get("/status").is_some()), "the home's API never answered");
    let body = serde_json::json!({"pool": "compute/credit/u33db/0", "side": "ask", "quantity": 10, "price": "0.1"});
    let (status, answer) = home.post("/offers", &body);
    assert_eq!(status, 503, "{answer}");
    assert!(answer.to_string().contains("catching up"), "{answer}");
}

/// Issue 26, item 1: a newcomer whose only bootnode is not in the pool (Kademlia on, mDNS off) finds the pool's
/// providers through the DHT, dials them, and receives the book they hold, including the ask of a home that has gone
/// offline since (only a fetch of the book can bring it); its bid is matched and settled on every ledger.
#[test]
fn a_newcomer_finds_a_pool_through_the_dht_receives_its_book_and_trades_in_it() {
    use kos_tests::cluster::Node as Running;

    const POOL: &str = "compute/credit/u33db/0";
    let root = tempfile::tempdir().unwrap();
    let keyed = one_validator_network(root.path(), &["validator", "seller", "early", "newcomer", "late"]);
    let start = |index: usize, bootnodes: &[String], extra: &[&str]| {
        let (dir, key, peer) = &keyed[index];
        Running::start(dir, key, peer, bootnodes, extra)
    };
    let validator = start(0, &[], &["--log", "info"]);
    let bootnodes = vec![validator.bootnode()];
    let seller = start(1, &bootnodes, &["--log", "info,kos::network=debug"]);
    let early = start(2, &bootnodes, &["--log", "info"]);
    assert!(wait_until(STARTUP, || seller.height() >= Some(2) && early.height() >= Some(2)), "no blocks");
    // Two homes join the pool by trading in it, and find each other through the DHT: each book holds both asks.
    let ask = |home: &Running, quantity: u64, price: &str| {
        let (status, answer) = home
            .post("/offers", &serde_json::json!({"pool": POOL, "side": "ask", "quantity": quantity, "price": price}));
        assert_eq!(status, 202, "{answer}");
    };
    ask(&seller, 2000, "5");
    ask(&early, 3000, "6");
    let asks = |home: &Running| {
        home.get(&format!("/pools/book?pool={POOL}")).unwrap_or_default()["book"]["asks"].as_array().map_or(0, Vec::len)
    };
    assert!(
        wait_until(Duration::from_secs(30), || asks(&seller) == 2),
        "the seller never saw the early home's ask: {}",
        seller.get("/status").unwrap_or_default()
    );
    // The early home goes offline: its ask rests in the seller's book, and only a fetch can bring it to a newcomer.
    drop(early);

    // The newcomer names the pool in its configuration and knows only the validator, which is not in the pool.
    let newcomer = start(3, &bootnodes, &["--pool", POOL, "--log", "info,kos::network=debug"]);
    let filled = || {
        newcomer
            .get("/status")
            .is_some_and(|status| !status["pools"][0]["book_filled_ms"].is_null() && asks(&newcomer) == 2)
    };
    assert!(
        wait_until(Duration::from_secs(20), filled),
        "the newcomer never received the pool's book: {}\n{:#?}",
        newcomer.get("/status").unwrap_or_default(),
        newcomer.process.lines()
    );
    let status = newcomer.get("/status").unwrap();
    let pool = &status["pools"][0];
    assert_eq!(pool["pool"], POOL, "{status}");
    assert!(pool["providers"].as_u64() >= Some(1) && pool["offers_fetched"].as_u64() >= Some(1), "{status}");
    let validator_pools = validator.get("/status").unwrap()["served_pools"].clone();
    assert_eq!(validator_pools, serde_json::json!([]), "the bootnode is not in the pool");

    // The newcomer's bid meets the best ask: 2 units at 5 credits, settled on every ledger.
    let bid = serde_json::json!({"pool": POOL, "side": "bid", "quantity": 2000, "price": "7"});
    let (status, answer) = newcomer.post("/offers", &bid);
    assert_eq!(status, 202, "{answer}");
    let (seller_key, buyer_key) = (seller.key.clone(), newcomer.key.clone());
    let settled = wait_until(Duration::from_secs(30), || {
        [&validator, &seller, &newcomer].iter().all(|node| {
            balance(&node.api, &seller_key) == Some(FUNDS + 10_000)
                && balance(&node.api, &buyer_key) == Some(FUNDS - 10_000)
        })
    });
    assert!(settled, "the newcomer's trade did not settle: {:#?}", seller.process.lines());

    // A late newcomer, its ledger caught up, joins the pool by placing an ask that crosses nothing. It fetches the
    // book from peers that still keep the seller's ask and the newcomer's bid, though the ledger filled all of both:
    // neither may enter its book (they would match each other there, a trade the ledger refuses), only the early
    // home's ask and its own. (A node whose ledger is still behind takes them in: see the closing note.)
    let late = start(4, &bootnodes, &["--log", "info"]);
    let height = validator.height().unwrap_or(0);
    assert!(wait_until(STARTUP, || late.height() >= Some(height)), "the late newcomer's ledger did not catch up");
    // Its ledger may still be syncing the blocks decided since (a 503, "try again shortly"): it tries again, as a
    // client would.
    let ask = serde_json::json!({"pool": POOL, "side": "ask", "quantity": 1000, "price": "9"});
    let mut answer = String::new();
    let placed = wait_until(Duration::from_secs(20), || {
        let (status, body) = late.post("/offers", &ask);
        answer = body.to_string();
        assert!(status == 202 || status == 503, "{status} {body}");
        status == 202
    });
    assert!(placed, "the late newcomer's ask was never taken: {answer}");
    let filled = || late.get("/status").is_some_and(|status| !status["pools"][0]["book_filled_ms"].is_null());
    assert!(wait_until(Duration::from_secs(20), filled), "the late newcomer never received the book");
    std::thread::sleep(Duration::from_secs(1));
    let book = late.get(&format!("/pools/book?pool={POOL}")).unwrap_or_default();
    let market = late.get("/pools").unwrap_or_default();
    assert_eq!(market["matches"], 0, "the filled offers matched in the late newcomer's book: {market}");
    assert_eq!(book["book"]["offers"], 2, "{book}");
}

/// Issue 26, item 2: three homes of one cell, each knowing only a validator that is not in the cell's barter pool,
/// find each other through the DHT (Kademlia on, mDNS off). Their barter offers close a cycle of three legs (compute
/// for memory for bandwidth for compute) that is settled on every ledger.
#[test]
fn three_homes_of_a_cell_close_a_barter_cycle_found_through_the_dht() {
    use kos_tests::cluster::Node as Running;

    let root = tempfile::tempdir().unwrap();
    let keyed = one_validator_network(root.path(), &["validator", "home-a", "home-b", "home-c"]);
    let start = |index: usize, bootnodes: &[String]| {
        let (dir, key, peer) = &keyed[index];
        Running::start(dir, key, peer, bootnodes, &["--log", "info,kos::network=debug"])
    };
    let validator = start(0, &[]);
    let bootnodes = vec![validator.bootnode()];
    let homes: Vec<Running> = (1..=3).map(|index| start(index, &bootnodes)).collect();
    assert!(wait_until(STARTUP, || homes.iter().all(|home| home.height() >= Some(2))), "no blocks");
    let barter = |home: &Running, give: &str, want: &str| {
        let body = serde_json::json!({"give": give, "give_quantity": 500, "want": want, "want_quantity": 500,
            "cell": "u33dc"});
        let (status, answer) = home.post("/barter", &body);
        assert_eq!(status, 202, "{answer}");
    };
    // One after another, a few seconds apart: each newcomer to the barter pool finds those before it in the DHT.
    barter(&homes[0], "compute", "memory");
    std::thread::sleep(Duration::from_secs(2));
    barter(&homes[1], "memory", "bandwidth");
    std::thread::sleep(Duration::from_secs(2));
    barter(&homes[2], "bandwidth", "compute");
    let mut cycle_id = None;
    let submitted = wait_until(Duration::from_secs(30), || {
        cycle_id = homes.iter().find_map(|home| {
            home.process.lines().iter().find_map(|line| {
                let rest = &line[line.find("settling a barter cycle")?..];
                let start = rest.find("cycle=")? + "cycle=".len();
                rest.get(start..start + 64).map(str::to_owned)
            })
        });
        cycle_id.is_some()
    });
    let statuses: Vec<serde_json::Value> =
        homes.iter().map(|home| home.get("/status").unwrap_or_default()["pools"].clone()).collect();
    assert!(submitted, "no barter cycle was submitted; the homes' pools: {statuses:#?}");
    let cycle_id = cycle_id.unwrap();
    let everywhere = wait_until(Duration::from_secs(20), || {
        std::iter::once(&validator)
            .chain(&homes)
            .all(|node| http::get(&node.api, &format!("/entries/{cycle_id}")).is_ok_and(|answer| answer.status == 200))
    });
    assert!(everywhere, "barter cycle {cycle_id} is not on every ledger");
    // The validator never joined the barter pool: the homes met through the DHT.
    assert_eq!(validator.get("/status").unwrap()["served_pools"], serde_json::json!([]));
    for status in &statuses {
        assert_eq!(status[0]["pool"], "barter/u33dc", "{status}");
    }
    // The cycle locked each giver's collateral (500 units at the default 1 credit a unit); each receiver signs its
    // receipt through its API, and the legs are released on every ledger.
    let cycle = homes[0].get(&format!("/barter/cycles/{cycle_id}")).unwrap();
    let legs = cycle["legs"].as_array().unwrap().clone();
    assert_eq!(legs.len(), 3, "{cycle}");
    for leg in &legs {
        assert_eq!((leg["status"].as_str(), leg["collateral"].as_u64()), (Some("pending"), Some(500)), "{leg}");
    }
    for home in &homes {
        let account = home.get("/status").unwrap()["account"].as_str().unwrap().to_owned();
        let mine = legs.iter().find(|leg| leg["receiver"] == account.as_str()).expect("a leg this home receives");
        let given = legs.iter().find(|leg| leg["giver"] == account.as_str()).unwrap()["id"].as_str().unwrap();
        // A dispute must say why.
        let (status, answer) = home.post(&format!("/barter/legs/{given}/dispute"), &serde_json::json!({}));
        assert_eq!(status, 400, "a dispute without text: {answer}");
        let id = mine["id"].as_str().unwrap();
        let (status, answer) =
            home.post(&format!("/barter/legs/{id}/verdict"), &serde_json::json!({"outcome": "done"}));
        assert_eq!(status, 202, "{answer}");
    }
    let released = wait_until(Duration::from_secs(30), || {
        std::iter::once(&validator).chain(&homes).all(|node| {
            node.get(&format!("/barter/cycles/{cycle_id}")).is_some_and(|cycle| {
                cycle["legs"].as_array().is_some_and(|legs| legs.iter().all(|leg| leg["status"] == "released"))
            })
        })
    });
    assert!(released, "{:#}", homes[0].get(&format!("/barter/cycles/{cycle_id}")).unwrap_or_default());
    let accounts = homes[0].get("/accounts").unwrap();
    for home in &homes {
        let account = home.get("/status").unwrap()["account"].as_str().unwrap().to_owned();
        let listed =
            accounts["accounts"].as_array().unwrap().iter().find(|listed| listed["account"] == account.as_str());
        let reputation = &listed.expect("the home's account is listed")["reputation"];
        assert_eq!((&reputation["barters"], &reputation["deliveries"]), (&1.into(), &1.into()), "{reputation}");
    }
}
