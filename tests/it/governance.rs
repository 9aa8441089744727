//! Governance on the real ledger: four `kos run` validators on loopback, each with RocksDB, deciding through
//! their APIs. A fee change passes with its quorum and takes effect at the block of the deciding vote on every
//! node; one without quorum is rejected at its end; a validator set change adds a fifth validator and removes one
//! while blocks keep coming; an override freezes the trading of a home (validator 3, whose simulated home offers
//! its forecast every interval): every node's market refuses its offers until the override expires on time. Last,
//! a newcomer takes a snapshot of the state made after both changes, tracing the validators from the genesis.

use std::time::Duration;

use kos_tests::cli::{keys, kos, wait_until};
use kos_tests::cluster::{Node, STARTUP};

const POOL: &str = "energy/credit/u33db/3";

fn proposal(node: &Node, title: &str, period: u32, action: serde_json::Value) -> String {
    let body = serde_json::json!({ "title": title, "voting_period_blocks": period, "action": action });
    let (status, answer) = node.post("/proposals", &body);
    assert_eq!(status, 202, "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

/// Votes from `voters` and returns the vote entries' ids.
fn vote(voters: &[&Node], proposal: &str, choice: &str) -> Vec<String> {
    voters
        .iter()
        .map(|node| {
            let (status, answer) =
                node.post(&format!("/proposals/{proposal}/votes"), &serde_json::json!({ "choice": choice }));
            assert_eq!(status, 202, "{answer}");
            answer["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Waits until every node has committed the entry; returns the height it is in (the same on every node).
fn committed(nodes: &[&Node], entry: &str) -> u64 {
    let mut heights = Vec::new();
    for node in nodes {
        let mut height = None;
        assert!(
            wait_until(Duration::from_secs(60), || {
                height = node.get(&format!("/entries/{entry}")).and_then(|answer| answer["height"].as_u64());
                height.is_some()
            }),
            "entry {entry} not committed on {}",
            node.api
        );
        heights.extend(height);
    }
    assert!(heights.windows(2).all(|pair| pair[0] == pair[1]), "{heights:?}");
    heights[0]
}

fn governance(node: &Node) -> serde_json::Value {
    node.get("/governance").unwrap_or_default()
}

fn status_of(node: &Node, proposal: &str) -> String {
    governance(node)["proposals"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|candidate| candidate["id"] == proposal)
        .map(|candidate| candidate["status"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

fn grid_fee(node: &Node) -> Option<u64> {
    governance(node)["params"]["grid_fee_per_kwh"].as_u64()
}

fn market(node: &Node, field: &str) -> u64 {
    node.get("/pools").and_then(|pools| pools[field].as_u64()).unwrap_or(0)
}

fn validators(node: &Node) -> usize {
    node.get("/validators").and_then(|answer| answer["validators"].as_array().map(Vec::len)).unwrap_or(0)
}

/// Every node's height moves at least `blocks` past where it is.
fn advancing(nodes: &[&Node], blocks: u64) -> bool {
    let start: Vec<u64> = nodes.iter().map(|node| node.height().unwrap_or(0)).collect();
    wait_until(Duration::from_secs(60), || {
        nodes.iter().zip(&start).all(|(node, from)| node.height().is_some_and(|height| height >= from + blocks))
    })
}

#[test]
fn proposals_overrides_and_validator_changes_take_effect_on_every_node() {
    let root = tempfile::tempdir().unwrap();
    let mut identities = Vec::new();
    for index in 0..6 {
        let dir = root.path().join(format!("v{index}"));
        let (key, peer) = keys(&dir);
        identities.push((dir, key, peer));
    }
    // Four genesis validators; the fifth joins as a follower and is added by governance.
    let genesis = root.path().join("genesis.toml");
    let mut args = vec!["ledger", "genesis", "--network", "kos-devnet", "--out", genesis.to_str().unwrap()];
    for (_, key, _) in &identities[..4] {
        args.extend(["--validator", key.as_str()]);
    }
    kos(&args);
    // Fee changes need three quarters of the validators' power to vote and two thirds of it yes; overrides a
    // simple majority.
    let mut text = std::fs::read_to_string(&genesis).unwrap();
    text.push_str(
        "\n[governance]\nvalidator_change_delay_blocks = 3\n\n[[governance.rules]]\nkind = \"set-parameter\"\n\
         weight = \"validators\"\nquorum_percent = 75\nthreshold_percent = 67\n\n[[governance.rules]]\n\
         kind = \"override\"\nweight = \"validators\"\nquorum_percent = 50\nthreshold_percent = 51\n",
    );
    std::fs::write(&genesis, text).unwrap();
    for (dir, _, _) in &identities {
        std::fs::copy(&genesis, dir.join("genesis.toml")).unwrap();
        // Snapshots every 20 blocks, for the newcomer at the end.
        std::fs::write(dir.join("config.toml"), "[storage]\nsnapshot_interval = 20\n").unwrap();
    }
    // Validator 3 runs a simulated home near noon, 180 times faster than the clock, that offers its forecast
    // surplus or deficit every 3-second interval in the pool.
    let noon = energy::calendar::days(2025, 6, 21) * 86_400 + 11 * 3600;
    let now_s = kos_tests::now_ms() / 1000;
    std::fs::write(
        identities[3].0.join("config.toml"),
        format!(
            "[storage]\nsnapshot_interval = 20\n\n[meter]\nkind = \"simulated\"\ninterval_s = 3\npoll_ms = 500\n\n[meter.simulated]\npv_kwp = 8.0\n\
             speed = 180\nsimulated_origin_s = {noon}\nwall_origin_s = {now_s}\n\n[meter.trade]\npool = \"{POOL}\"\n"
        ),
    )
    .unwrap();
    let mut nodes: Vec<Node> = Vec::new();
    for (dir, key, peer) in &identities[..4] {
        let bootnodes: Vec<String> = nodes.iter().map(Node::bootnode).collect();
        nodes.push(Node::start(dir, key, peer, &bootnodes, &["--pool", POOL]));
    }
    let all: Vec<&Node> = nodes.iter().collect();
    assert!(
        wait_until(STARTUP, || all.iter().all(|node| node.height().is_some_and(|height| height >= 2))),
        "the validators did not start committing: {:#?}",
        nodes[0].process.lines()
    );

    // A fee change: two yes votes are not yet two thirds of the power; the third passes it, in its own block,
    // on every node.
    assert_eq!(grid_fee(&nodes[0]), Some(0));
    let fee = proposal(
        &nodes[0],
        "Grid fee 20 per kWh",
        200,
        serde_json::json!({"kind": "set-parameter", "name": "grid_fee_per_kwh", "value": 20}),
    );
    committed(&all, &fee);
    let first = vote(&[&nodes[0], &nodes[1]], &fee, "yes");
    for id in &first {
        committed(&all, id);
    }
    assert!(all.iter().all(|node| grid_fee(node) == Some(0) && status_of(node, &fee) == "open"));
    let third = vote(&[&nodes[2]], &fee, "yes");
    let passing_height = committed(&all, &third[0]);
    for node in &all {
        assert_eq!(grid_fee(node), Some(20), "{}", node.api);
        assert_eq!(status_of(node, &fee), "passed");
    }
    // The blocks before and at the passing height are the same on every node.
    let hashes: Vec<Option<String>> = all
        .iter()
        .map(|node| node.get(&format!("/blocks/{passing_height}")).map(|block| block["hash"].to_string()))
        .collect();
    assert!(hashes.iter().all(|hash| hash.is_some() && *hash == hashes[0]), "{hashes:?}");

    // Without quorum (one validator of four votes) a change is rejected when its period ends.
    let lonely = proposal(
        &nodes[1],
        "Grid fee 99",
        6,
        serde_json::json!({"kind": "set-parameter", "name": "grid_fee_per_kwh", "value": 99}),
    );
    committed(&all, &lonely);
    let only = vote(&[&nodes[1]], &lonely, "yes");
    committed(&all, &only[0]);
    assert!(
        wait_until(Duration::from_secs(60), || all.iter().all(|node| status_of(node, &lonely) == "rejected")),
        "{:?}",
        governance(&nodes[0])
    );
    assert!(all.iter().all(|node| grid_fee(node) == Some(20)));

    // The home's offers reach every validator's market.
    assert!(
        wait_until(Duration::from_secs(60), || all.iter().all(|node| market(node, "offers") >= 2)),
        "the home's offers did not reach the markets: {:?}\n{:#?}",
        all.iter().map(|node| node.get("/pools")).collect::<Vec<_>>(),
        nodes[3].process.lines()
    );
    // Freeze its trading for 20 blocks: three of four validators say yes, past the majority rule at once.
    let home = identities[3].1.clone();
    let freeze = proposal(
        &nodes[0],
        "Freeze the runaway home",
        50,
        serde_json::json!({"kind": "override", "measure": "freeze", "account": home, "duration_blocks": 20}),
    );
    committed(&all, &freeze);
    let yes = vote(&[&nodes[0], &nodes[1], &nodes[2]], &freeze, "yes");
    let in_force_at = yes.iter().map(|id| committed(&all, id)).max().unwrap();
    let overrides = governance(&nodes[0])["overrides"].clone();
    let until_height = overrides[0]["until_height"].as_u64().expect("an override in force");
    assert_eq!(overrides[0]["measure"], "freeze");
    assert!(until_height <= in_force_at + 20 && until_height >= in_force_at, "{overrides} at {in_force_at}");
    // The home's own market refuses its next offers, so they are not gossiped: no other node takes one while the
    // freeze lasts (every node's market would refuse them too), and its API says why.
    let refused_before = market(&nodes[3], "frozen");
    assert!(
        wait_until(Duration::from_secs(30), || market(&nodes[3], "frozen") > refused_before),
        "the home's market did not refuse its frozen offers: {:?}",
        nodes[3].get("/pools")
    );
    let offers_before: Vec<u64> = all.iter().map(|node| market(node, "offers")).collect();
    let refused_once = market(&nodes[3], "frozen");
    assert!(wait_until(Duration::from_secs(30), || market(&nodes[3], "frozen") > refused_once));
    let offers_frozen: Vec<u64> = all.iter().map(|node| market(node, "offers")).collect();
    assert_eq!(&offers_frozen[..3], &offers_before[..3], "a validator took an offer of the frozen home");
    let (status, answer) =
        nodes[3].post("/offers", &serde_json::json!({"pool": POOL, "side": "ask", "quantity": 10, "price": "0.1"}));
    assert_eq!(status, 403, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("frozen"), "{answer}");
    // It expires on time: after its last block, every node takes the home's offers again.
    assert!(
        wait_until(Duration::from_secs(90), || all.iter().all(|node| node.height().is_some_and(|h| h > until_height))),
        "the chain stopped before the override's end"
    );
    assert!(all.iter().all(|node| governance(node)["overrides"].as_array().is_some_and(Vec::is_empty)));
    let accepted: Vec<u64> = all.iter().map(|node| market(node, "offers")).collect();
    assert!(
        wait_until(Duration::from_secs(30), || all
            .iter()
            .zip(&accepted)
            .all(|(node, before)| market(node, "offers") > *before)),
        "the home's offers were not taken again after the override expired"
    );

    // A fifth validator: it joins as a follower, governance adds it, and it certifies from the announced height.
    let (dir, key, peer) = &identities[4];
    let bootnodes: Vec<String> = nodes.iter().map(Node::bootnode).collect();
    nodes.push(Node::start(dir, key, peer, &bootnodes, &["--pool", POOL]));
    let all: Vec<&Node> = nodes.iter().collect();
    let add = proposal(
        &nodes[0],
        "Add the school's node",
        100,
        serde_json::json!({"kind": "add-validator", "key": key, "power": 1}),
    );
    committed(&all[..4], &add);
    let yes = vote(&[&nodes[0], &nodes[1], &nodes[2]], &add, "yes");
    let passed_at = yes.iter().map(|id| committed(&all[..4], id)).max().unwrap();
    // Announced for three blocks later (unless it already happened).
    let change = governance(&nodes[0]);
    if let Some(pending) = change["validator_changes"].as_array().and_then(|changes| changes.first()) {
        assert_eq!(pending["height"], passed_at + 3, "{change}");
        assert_eq!(validators(&nodes[0]), 4, "{change}");
    }
    assert!(
        wait_until(Duration::from_secs(60), || all.iter().all(|node| validators(node) == 5)),
        "the fifth validator was not added on every node"
    );
    assert!(advancing(&all, 5), "blocks stopped after the fifth validator was added");
    // Remove validator 3 (the home): four of five must say yes; blocks go on with the four left.
    let remove =
        proposal(&nodes[4], "Retire validator 3", 100, serde_json::json!({"kind": "remove-validator", "key": home}));
    committed(&all, &remove);
    let yes = vote(&[&nodes[0], &nodes[1], &nodes[2], &nodes[4]], &remove, "yes");
    for id in &yes {
        committed(&all, id);
    }
    assert!(
        wait_until(Duration::from_secs(60), || all.iter().all(|node| validators(node) == 4)),
        "validator 3 was not removed on every node"
    );
    let validator_keys: Vec<String> = nodes[4].get("/validators").unwrap()["validators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|validator| validator["key"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(validator_keys.contains(key) && !validator_keys.contains(&home), "{validator_keys:?}");
    assert!(advancing(&all, 5), "blocks stopped after validator 3 was removed");
    // Every node holds the same chain.
    let tip = all.iter().filter_map(|node| node.height()).min().unwrap();
    let hashes: Vec<Option<String>> =
        all.iter().map(|node| node.get(&format!("/blocks/{tip}")).map(|block| block["hash"].to_string())).collect();
    assert!(hashes.iter().all(|hash| hash.is_some() && *hash == hashes[0]), "{hashes:?}");

    // Issue 28, item 2: a newcomer takes a snapshot made after both changes (none older is worth it to it): it
    // traces the validators from the genesis through the two changes, keeps the snapshot's block as its first, and
    // follows the chain from there with the set the changes made.
    let after_changes = tip + 1;
    assert!(
        wait_until(Duration::from_secs(90), || all
            .iter()
            .all(|node| node.height().is_some_and(|height| height >= after_changes.next_multiple_of(20) + 2))),
        "no snapshot after the changes"
    );
    let (dir, key, peer) = &identities[5];
    std::fs::write(
        dir.join("config.toml"),
        format!("[ledger]\nstate_sync_min_height = {after_changes}\n[storage]\nsnapshot_interval = 20\n"),
    )
    .unwrap();
    let bootnodes: Vec<String> = nodes.iter().map(Node::bootnode).collect();
    let newcomer = Node::start(dir, key, peer, &bootnodes, &[]);
    let first_block = || newcomer.get("/status").and_then(|status| status["ledger"]["first_block"].as_u64());
    assert!(
        wait_until(Duration::from_secs(60), || first_block().is_some_and(|first| first >= after_changes)
            && newcomer.height() >= nodes[0].height()),
        "the newcomer did not take a snapshot after the changes: first block {:?}, height {:?}\n{:#?}",
        first_block(),
        newcomer.height(),
        newcomer.process.lines()
    );
    let first = first_block().unwrap();
    assert_eq!(first % 20, 0, "a snapshot height");
    assert!(newcomer.process.lines().iter().any(|line| line.contains("took the snapshot")));
    assert_eq!(validators(&newcomer), 4);
    let tip = newcomer.height().unwrap();
    assert_eq!(
        newcomer.get(&format!("/blocks/{tip}")).map(|block| block["hash"].to_string()),
        nodes[0].get(&format!("/blocks/{tip}")).map(|block| block["hash"].to_string())
    );
    assert_eq!(kos_tests::http::get(&newcomer.api, "/blocks/3").unwrap().status, 410, "it keeps no older block");
    // The state is the validators': the same governance record.
    assert_eq!(governance(&newcomer)["proposals"], governance(&nodes[0])["proposals"]);
}

/// Issue 28, item 5: a coordinated upgrade. Four validators vote an upgrade to protocol version 2 at a height;
/// validator 3 runs as a kos that supports only version 1 would (`KOS_LEDGER_VERSION_MAX=1`). Every block before the
/// height is of version 1 and every block from it of version 2; validator 3 stops cleanly before deciding it,
/// saying what to install, while the three others (three quarters of the power) go on; `GET /governance` showed
/// which validators run the version. Started again with a kos that supports it, validator 3 goes on from there.
#[test]
fn an_upgrade_height_switches_the_validators_and_stops_an_old_kos_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let mut identities = Vec::new();
    for index in 0..4 {
        let dir = root.path().join(format!("v{index}"));
        let (key, peer) = keys(&dir);
        identities.push((dir, key, peer));
    }
    let genesis = root.path().join("genesis.toml");
    let mut args = vec!["ledger", "genesis", "--network", "kos-devnet", "--out", genesis.to_str().unwrap()];
    for (_, key, _) in &identities {
        args.extend(["--validator", key.as_str()]);
    }
    kos(&args);
    for (dir, _, _) in &identities {
        std::fs::copy(&genesis, dir.join("genesis.toml")).unwrap();
    }
    let old = [(kos::config::LEDGER_VERSION_MAX_VARIABLE, "1")];
    let mut nodes: Vec<Node> = Vec::new();
    for (index, (dir, key, peer)) in identities.iter().enumerate() {
        let bootnodes: Vec<String> = nodes.iter().map(Node::bootnode).collect();
        let env: &[(&str, &str)] = if index == 3 { &old } else { &[] };
        nodes.push(Node::start_with_env(dir, key, peer, &bootnodes, &[], env));
    }
    let all: Vec<&Node> = nodes.iter().collect();
    assert!(
        wait_until(STARTUP, || all.iter().all(|node| node.height().is_some_and(|height| height >= 2))),
        "the validators did not start committing"
    );
    let upgrade_height = nodes[0].height().unwrap() + 25;
    let upgrade = proposal(
        &nodes[0],
        "Protocol version 2",
        5,
        serde_json::json!({"kind": "upgrade", "version": 2, "height": upgrade_height, "info": "kos 0.2"}),
    );
    committed(&all, &upgrade);
    let yes = vote(&[&nodes[0], &nodes[1], &nodes[2]], &upgrade, "yes");
    for id in &yes {
        committed(&all, id);
    }
    let scheduled = governance(&nodes[0]);
    assert_eq!(scheduled["protocol_version"], 1, "{scheduled}");
    assert_eq!(scheduled["upgrade"]["version"], 2, "{scheduled}");
    assert_eq!(scheduled["upgrade"]["height"], upgrade_height, "{scheduled}");
    // Which validators run version 2, as they announced it: all but validator 3.
    let runs = |answer: &serde_json::Value, key: &str| {
        answer["upgrade"]["validators"]
            .as_array()
            .and_then(|validators| validators.iter().find(|validator| validator["key"] == key))
            .map(|validator| validator["runs"].clone())
    };
    assert!(
        wait_until(Duration::from_secs(20), || {
            let answer = governance(&nodes[0]);
            identities[..3].iter().all(|(_, key, _)| runs(&answer, key) == Some(serde_json::json!(true)))
                && runs(&answer, &identities[3].1) == Some(serde_json::json!(false))
        }),
        "{}",
        governance(&nodes[0])
    );
    // Validator 3 stops before the upgrade height, saying what to install; the others go past it.
    let stopped = nodes[3].process.wait_for_line(Duration::from_secs(90), |line| line.contains("install \"kos 0.2\""));
    assert!(stopped.is_some(), "{:#?}", nodes[3].process.lines());
    assert!(nodes[3].process.wait(Duration::from_secs(30)).is_some(), "the old kos did not exit");
    assert!(
        wait_until(Duration::from_secs(60), || nodes[..3].iter().all(|node| node.height() > Some(upgrade_height + 3))),
        "the three did not go past the upgrade"
    );
    let version =
        |node: &Node, height: u64| node.get(&format!("/blocks/{height}")).map(|block| block["version"].clone());
    assert_eq!(version(&nodes[0], upgrade_height - 1), Some(serde_json::json!(1)));
    assert_eq!(version(&nodes[0], upgrade_height), Some(serde_json::json!(2)));
    assert_eq!(version(&nodes[1], upgrade_height + 1), Some(serde_json::json!(2)));
    assert_eq!(governance(&nodes[0])["protocol_version"], 2);
    // Validator 3 with a kos that runs version 2 goes on from where it stopped.
    let (dir, key, peer) = &identities[3];
    let bootnodes: Vec<String> = nodes[..3].iter().map(Node::bootnode).collect();
    nodes[3] = Node::start(dir, key, peer, &bootnodes, &[]);
    let target = nodes[0].height().unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || nodes[3].height() >= Some(target)),
        "validator 3 did not go on after the upgrade: {:#?}",
        nodes[3].process.lines()
    );
    assert_eq!(version(&nodes[3], upgrade_height), Some(serde_json::json!(2)));
}
