//! The job marketplace on the real ledger: four `kos run` validators on loopback, each with RocksDB, posting,
//! bidding and delivering through their APIs. A job with two bids is awarded by its posted rule on every node, its
//! price moves to escrow, a receipt completes it and the reward lands; a job whose worker does nothing times out,
//! refunding the poster and slashing the collateral; a compute job is paid after the ledger re-executes a sample of
//! the worker's result, and a worker that returns made-up results (a raw client signing with its key) is caught
//! by the sample and slashed; a dispute is settled by a jury drawn from the ledger, identically on every node.

use std::time::Duration;

use kos_tests::cli::{keys, kos, wait_until};
use kos_tests::cluster::{Node, STARTUP};
use protocol::message::{Body, ComputeTask, Deliver, Opening, Proof};
use protocol::types::BoundedVec;
use protocol::{Draft, Id, NetworkId};
use serde_json::{Value, json};

const FUNDS: u64 = 1_000_000_000;

fn post(node: &Node, path: &str, body: &Value) -> String {
    let (status, answer) = node.post(path, body);
    assert_eq!(status, 202, "{path}: {answer}");
    answer["id"].as_str().unwrap().to_owned()
}

fn job(node: &Node, id: &str) -> Value {
    node.get(&format!("/jobs/{id}")).unwrap_or_default()
}

/// Waits until every node shows the job with `status`; returns each node's view of it.
fn settled(nodes: &[&Node], id: &str, status: &str) -> Vec<Value> {
    assert!(
        wait_until(Duration::from_secs(90), || nodes.iter().all(|node| job(node, id)["status"] == status)),
        "job {id} is not {status} everywhere: {:#?}",
        nodes.iter().map(|node| job(node, id)).collect::<Vec<_>>()
    );
    nodes.iter().map(|node| job(node, id)).collect()
}

fn credit(node: &Node, account: &str) -> u64 {
    node.get(&format!("/accounts/{account}/balances"))
        .and_then(|answer| answer["balances"]["credit"].as_u64())
        .unwrap_or(0)
}

/// The same value of `field` on every node's view.
fn same(views: &[Value], field: &str) -> Value {
    assert!(views.windows(2).all(|pair| pair[0][field] == pair[1][field]), "{field} differs: {views:#?}");
    views[0][field].clone()
}

#[test]
fn jobs_are_awarded_escrowed_completed_slashed_and_judged_alike_on_every_node() {
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
        args.extend(["--validator", key.as_str(), "--fund", key.as_str()]);
    }
    kos(&args);
    let mut text = std::fs::read_to_string(&genesis).unwrap();
    // Juries of two (of the two validators that are not parties), deciding within two minutes.
    text.push_str("\n[params]\njury_size = 2\njury_period_ms = 120000\n");
    std::fs::write(&genesis, text).unwrap();
    for (dir, _, _) in &identities {
        std::fs::copy(&genesis, dir.join("genesis.toml")).unwrap();
    }
    let mut nodes: Vec<Node> = Vec::new();
    for (dir, key, peer) in &identities {
        let bootnodes: Vec<String> = nodes.iter().map(Node::bootnode).collect();
        nodes.push(Node::start(dir, key, peer, &bootnodes, &[]));
    }
    let all: Vec<&Node> = nodes.iter().collect();
    assert!(
        wait_until(STARTUP, || all.iter().all(|node| node.height().is_some_and(|height| height >= 2))),
        "the validators did not start committing: {:#?}",
        nodes[0].process.lines()
    );
    let key = |index: usize| identities[index].1.clone();

    // A delivery, awarded to the lowest price when bidding ends; the recipient's receipt completes it.
    let delivery = post(
        &nodes[0],
        "/jobs",
        &json!({
            "kind": "delivery", "title": "Carry 20 l of water to the shelter", "reward": "10", "collateral": "2",
            "slash_ppm": 500_000, "rule": "lowest-price", "cell": "u33db", "bids_for_s": 6, "work_for_s": 600,
            "evidence": { "kind": "receipt", "recipient": key(3) },
        }),
    );
    assert!(
        wait_until(Duration::from_secs(30), || all.iter().all(|node| job(node, &delivery)["status"] == "open")),
        "the posting did not reach every node"
    );
    // Every node's index finds it for a worker nearby.
    let found = nodes[2].get("/jobs/match?kinds=delivery&cell=u33db&radius_m=5000").unwrap();
    assert!(found["jobs"].as_array().unwrap().iter().any(|open| open["id"] == delivery.as_str()), "{found}");
    // The poster announced it in the DHT under its kind and cell: another node finds the poster there.
    assert!(
        wait_until(Duration::from_secs(30), || {
            nodes[3].get("/jobs/providers?kind=delivery&cell=u33db").is_some_and(|answer| {
                answer["providers"]
                    .as_array()
                    .is_some_and(|peers| peers.iter().any(|peer| peer == nodes[0].peer.as_str()))
            })
        }),
        "the job's poster is not found in the DHT: {:?}",
        nodes[3].get("/jobs/providers?kind=delivery&cell=u33db")
    );
    post(&nodes[1], &format!("/jobs/{delivery}/bids"), &json!({ "price": "9", "distance_m": 800 }));
    post(&nodes[2], &format!("/jobs/{delivery}/bids"), &json!({ "price": "7", "distance_m": 2500 }));
    let views = settled(&all, &delivery, "awarded");
    let award = same(&views, "award");
    assert_eq!(award["worker"], key(2).as_str(), "the lowest price wins: {award}");
    assert_eq!(award["price"], 7_000);
    assert_eq!(same(&views, "escrow"), 9_000, "the price and the winner's collateral");
    for node in &all {
        assert_eq!(credit(node, &key(0)), FUNDS - 7_000);
        assert_eq!(credit(node, &key(1)), FUNDS, "the losing bid's collateral is back");
    }
    post(&nodes[2], &format!("/jobs/{delivery}/deliver"), &json!({ "proof": "claim" }));
    post(&nodes[3], &format!("/jobs/{delivery}/verdict"), &json!({ "outcome": "done" }));
    let views = settled(&all, &delivery, "done");
    assert_eq!(same(&views, "escrow"), 0);
    for node in &all {
        assert_eq!(credit(node, &key(2)), FUNDS + 7_000, "the reward landed on {}", node.api);
    }

    // A job whose worker does nothing, posted and bid on with the CLI: at its deadline the poster gets the price
    // back and half the collateral.
    let cli = |node: &Node, args: &[&str]| -> String {
        let output = std::process::Command::new(kos_tests::process::kos_binary())
            .args(["--data-dir", node.dir.to_str().unwrap()])
            .args(args)
            .env("KOS_API", &node.api)
            .env_remove("KOS_KEY_FILE")
            .output()
            .unwrap();
        assert!(output.status.success(), "kos {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let printed = cli(
        &nodes[0],
        &[
            "job",
            "post",
            "--kind",
            "build",
            "--title",
            "Print a valve handle",
            "--reward",
            "5",
            "--collateral",
            "4",
            "--slash-ppm",
            "500000",
            "--rule",
            "first-qualified",
            "--bids-for",
            "60",
            "--work-for",
            "8",
        ],
    );
    let idle = printed.split_whitespace().nth(1).unwrap().to_owned();
    settled(&all, &idle, "open");
    cli(&nodes[1], &["job", "bid", &idle, "--price", "5"]);
    let views = settled(&all, &idle, "failed");
    assert_eq!(same(&views, "slashed"), 2_000);
    for node in &all {
        assert_eq!(credit(node, &key(1)), FUNDS - 2_000);
        assert_eq!(credit(node, &key(0)), FUNDS - 7_000 + 2_000);
    }
    let shown = cli(&nodes[2], &["job", "show", &idle]);
    assert!(shown.contains("status failed (the deadline passed)") && shown.contains("awarded to"), "{shown}");

    // Compute: the honest worker's node runs the task and opens the sample; it is paid.
    let task = json!({ "kind": "compute", "units": 256, "rounds": 64, "samples": 8 });
    let honest = post(
        &nodes[0],
        "/jobs",
        &json!({
            "kind": "compute", "title": "Hash the forecaster's batch", "reward": "6", "collateral": "3",
            "slash_ppm": 1_000_000, "rule": "first-qualified", "bids_for_s": 60, "work_for_s": 300, "evidence": task,
        }),
    );
    settled(&all, &honest, "open");
    post(&nodes[3], &format!("/jobs/{honest}/bids"), &json!({ "price": "6" }));
    settled(&all, &honest, "awarded");
    post(&nodes[3], &format!("/jobs/{honest}/deliver"), &json!({ "proof": "compute" }));
    let views = settled(&all, &honest, "done");
    assert!(same(&views, "reason").as_str().unwrap().contains("sampled"), "{views:#?}");

    // A worker that makes its results up signs them itself (a raw client): the sample catches it.
    let cheat = post(
        &nodes[0],
        "/jobs",
        &json!({
            "kind": "compute", "title": "Hash the second batch", "reward": "6", "collateral": "3",
            "slash_ppm": 1_000_000, "rule": "first-qualified", "bids_for_s": 60, "work_for_s": 300, "evidence": task,
        }),
    );
    settled(&all, &cheat, "open");
    post(&nodes[2], &format!("/jobs/{cheat}/bids"), &json!({ "price": "6" }));
    let views = settled(&all, &cheat, "awarded");
    let evidence = same(&views, "evidence");
    let task = ComputeTask {
        seed: Id::from_hex(evidence["seed"].as_str().unwrap()).unwrap(),
        units: 256,
        rounds: 64,
        samples: 8,
    };
    // One unit in sixteen computed, the rest made up. (With half made up, all eight samples fell on computed units
    // one run in 256, and the cheat was paid: this test failed so on 2026-12-05. Now one run in 2^32.)
    let leaves: Vec<Id> = (0..task.units)
        .map(|index| if index % 16 == 0 { protocol::message::unit_output(&task, index) } else { Id([7; 32]) })
        .collect();
    let levels = protocol::message::merkle_levels(leaves);
    let root = *levels.last().unwrap().first().unwrap();
    let keypair = kos::keyfile::read(&identities[2].0.join("node.key")).unwrap();
    let cheat_id = Id::from_hex(&cheat).unwrap();
    let sign = |nonce: u64, proof: Proof| {
        let now = kos_tests::now_ms();
        Draft {
            network: NetworkId::new("kos-devnet").unwrap(),
            nonce,
            created_ms: now,
            expires_ms: now + 600_000,
            body: Body::Deliver(Deliver { job: cheat_id, proof }),
        }
        .sign(&keypair)
    };
    let submit = |envelope: protocol::Envelope| {
        let authorization = format!("Bearer {}", nodes[2].token);
        let response = kos_tests::http::request(
            &nodes[2].api,
            "POST",
            "/entries",
            &[("Authorization", authorization.as_str())],
            &envelope.to_bytes(),
        )
        .unwrap();
        assert_eq!(response.status, 202, "{}", response.text());
    };
    submit(sign(1, Proof::Result(root)));
    let mut committed = Value::Null;
    assert!(wait_until(Duration::from_secs(60), || {
        committed = job(&nodes[2], &cheat);
        committed["result"] == root.to_hex().as_str()
    }));
    let sample = protocol::message::sample_indices(
        &task,
        &cheat_id,
        &root,
        committed["result_height"].as_u64().unwrap(),
        committed["result_ms"].as_u64().unwrap(),
    );
    let openings: Vec<Opening> = sample
        .iter()
        .map(|index| Opening {
            index: *index,
            leaf: levels[0][*index as usize],
            path: BoundedVec::new(protocol::message::merkle_path(&levels, *index)).unwrap(),
        })
        .collect();
    submit(sign(2, Proof::Openings(BoundedVec::new(openings).unwrap())));
    let views = settled(&all, &cheat, "failed");
    assert_eq!(same(&views, "slashed"), 3_000, "the whole collateral");
    assert!(same(&views, "reason").as_str().unwrap().contains("re-execute"), "{views:#?}");

    // A dispute: the worker says the poster does not answer; the jury (the two validators not party to it) finds
    // the work done.
    let disputed = post(
        &nodes[0],
        "/jobs",
        &json!({
            "kind": "maintenance", "title": "Clean the community PV array", "reward": "8", "collateral": "1",
            "slash_ppm": 1_000_000, "rule": "first-qualified", "bids_for_s": 60, "work_for_s": 600,
        }),
    );
    settled(&all, &disputed, "open");
    post(&nodes[1], &format!("/jobs/{disputed}/bids"), &json!({ "price": "8" }));
    settled(&all, &disputed, "awarded");
    post(&nodes[1], &format!("/jobs/{disputed}/dispute"), &json!({ "text": "Cleaned on Tuesday; no answer since." }));
    let views = settled(&all, &disputed, "disputed");
    let jurors = same(&views, "jurors");
    let jurors: Vec<&str> = jurors.as_array().unwrap().iter().map(|juror| juror.as_str().unwrap()).collect();
    let mut expected = vec![key(2), key(3)];
    expected.sort();
    let mut drawn: Vec<String> = jurors.iter().map(|juror| (*juror).to_owned()).collect();
    drawn.sort();
    assert_eq!(drawn, expected, "neither party sits on the jury");
    for juror in &jurors {
        let index = (0..4).find(|index| key(*index) == *juror).unwrap();
        post(&nodes[index], &format!("/jobs/{disputed}/verdict"), &json!({ "outcome": "done" }));
    }
    let views = settled(&all, &disputed, "done");
    same(&views, "votes_done");
    same(&views, "reason");
    for node in &all {
        assert_eq!(credit(node, &key(1)), FUNDS - 2_000 + 8_000);
    }
    // Every node computed the same ledger.
    let height = nodes.iter().map(|node| node.height().unwrap()).min().unwrap();
    let hashes: Vec<Option<String>> =
        all.iter().map(|node| node.get(&format!("/blocks/{height}")).map(|block| block["hash"].to_string())).collect();
    assert!(hashes.iter().all(|hash| hash.is_some() && *hash == hashes[0]), "{hashes:?}");
}
