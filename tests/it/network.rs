//! The gossip network with real swarms on 127.0.0.1: propagation over many hops, validation at the door, peer
//! scores, per-peer budgets, pool discovery through the DHT, QUIC and TCP.

use std::collections::HashSet;
use std::time::Duration;

use kos::network::local::{self, Node, Transport, now_ms};
use kos::network::{Stats, Topic, wait_for};
use protocol::message::PoolId;
use protocol::{Draft, NetworkId};

fn network() -> NetworkId {
    NetworkId::new("kos-test").unwrap()
}

fn pool() -> PoolId {
    "energy/credit/u33db/900".parse().unwrap()
}

/// Nodes with keys `first..first + count`, no DHT (the topology is exactly the links the test makes).
async fn cluster(first: u64, count: u64, transport: Transport) -> Vec<Node> {
    let mut nodes = Vec::new();
    for seed in first..first + count {
        nodes.push(local::start(seed, &network(), transport, |config| config.kademlia = false).await.unwrap());
    }
    for node in &nodes {
        node.handle.subscribe(Topic::pool(&pool())).await.unwrap();
    }
    nodes
}

/// Waits until every node has each of its linked neighbours in its mesh for the pool topic.
async fn wait_for_mesh(nodes: &[Node], links: &[(usize, usize)]) {
    for (a, b) in links {
        for (x, y) in [(a, b), (b, a)] {
            let peer = nodes[*y].handle.peer_id();
            let meshed = wait_for(Duration::from_secs(15), || async {
                nodes[*x].handle.topic_peers(Topic::pool(&pool())).await.unwrap().contains(&peer)
            })
            .await;
            assert!(meshed, "node {x} has no mesh link to node {y}");
        }
    }
}

/// Receives deliveries until one with `id` arrives; returns everything received before it.
async fn receive_until(node: &mut Node, id: protocol::Id, timeout: Duration) -> Option<Vec<protocol::Id>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let delivery = tokio::time::timeout_at(deadline, node.deliveries.recv()).await.ok()??;
        if delivery.id == id {
            return Some(seen);
        }
        seen.push(delivery.id);
    }
}

async fn links(nodes: &[Node], links: &[(usize, usize)]) {
    for (a, b) in links {
        local::connect(&nodes[*a], &nodes[*b]).await.unwrap();
    }
    wait_for_mesh(nodes, links).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_crosses_a_line_of_ten_nodes() {
    let mut nodes = cluster(100, 10, Transport::Tcp).await;
    let line: Vec<(usize, usize)> = (0..9).map(|i| (i, i + 1)).collect();
    links(&nodes, &line).await;
    // Each node is connected to its neighbours only.
    for (i, node) in nodes.iter().enumerate() {
        let expected = if i == 0 || i == 9 { 1 } else { 2 };
        assert_eq!(node.handle.info().await.unwrap().peers.len(), expected, "node {i}");
    }
    let offer = local::offer(&nodes[0].keypair, &network(), &pool(), 1, now_ms());
    let id = nodes[0].handle.publish(&offer, None, now_ms()).await.unwrap();
    assert_eq!(id.0, *blake3::hash(&offer.to_bytes()).as_bytes(), "gossip ids are blake3 of the message bytes");
    for (i, node) in nodes.iter_mut().enumerate().skip(1) {
        let before = receive_until(node, offer.id(), Duration::from_secs(20)).await;
        assert_eq!(before, Some(vec![]), "node {i} did not receive the offer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_from_every_node_reach_every_node_of_a_ring() {
    let mut nodes = cluster(200, 12, Transport::Tcp).await;
    let ring: Vec<(usize, usize)> = (0..12).map(|i| (i, (i + 1) % 12)).collect();
    links(&nodes, &ring).await;
    let offers: Vec<_> = (0..12).map(|i| local::offer(&nodes[i].keypair, &network(), &pool(), 7, now_ms())).collect();
    for (node, offer) in nodes.iter().zip(&offers) {
        node.handle.publish(offer, None, now_ms()).await.unwrap();
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        let mut expected: HashSet<protocol::Id> = offers.iter().map(|offer| offer.id()).collect();
        expected.remove(&offers[i].id());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !expected.is_empty() {
            let delivery = tokio::time::timeout_at(deadline, node.deliveries.recv()).await;
            let delivery = delivery.unwrap_or_else(|_| panic!("node {i} misses {} offers", expected.len())).unwrap();
            assert!(expected.remove(&delivery.id), "node {i} got an unexpected or repeated message");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_are_rejected_not_forwarded_and_cost_the_sender() {
    // a - b - c and d - b: a and d misbehave, b judges, c must never see their invalid messages.
    let mut nodes = cluster(300, 4, Transport::Tcp).await;
    links(&nodes, &[(0, 1), (1, 2), (3, 1)]).await;
    let topic = Topic::pool(&pool());
    let (a_peer, d_peer) = (nodes[0].handle.peer_id(), nodes[3].handle.peer_id());

    // d's first offer, nonce 5, is valid and reaches c.
    let first = local::offer(&nodes[3].keypair, &network(), &pool(), 5, now_ms());
    nodes[3].handle.publish(&first, None, now_ms()).await.unwrap();
    assert_eq!(receive_until(&mut nodes[2], first.id(), Duration::from_secs(10)).await, Some(vec![]));
    let (a, b, d) = (&nodes[0], &nodes[1], &nodes[3]);
    let rejected = || Stats::get(&b.handle.stats().rejected);
    let score = |peer| async move { b.handle.peer_score(peer).await.unwrap().unwrap() };
    assert!(score(a_peer).await > -1.0 && score(d_peer).await > -1.0);

    // a: a bad signature, and an offer signed for another network.
    let mut forged = local::offer(&a.keypair, &network(), &pool(), 6, now_ms());
    forged.signature.0[5] ^= 1;
    let foreign = Draft {
        network: NetworkId::new("kos-other").unwrap(),
        ..draft_of(&local::offer(&a.keypair, &network(), &pool(), 7, now_ms()))
    }
    .sign(&a.keypair);
    // d: an oversized message (over the envelope limit, under gossipsub's transmit limit), and a replay: nonce 5
    // again on another offer.
    let mut oversized = vec![0x88u8];
    oversized.resize(protocol::limits::ENVELOPE_BYTES_MAX + 100, 0x00);
    let replay =
        Draft { nonce: 5, ..draft_of(&local::offer(&d.keypair, &network(), &pool(), 8, now_ms())) }.sign(&d.keypair);
    assert_ne!(replay.id(), first.id());
    a.handle.publish_bytes(topic, forged.to_bytes()).await.unwrap();
    a.handle.publish_bytes(topic, foreign.to_bytes()).await.unwrap();
    d.handle.publish_bytes(topic, oversized).await.unwrap();
    d.handle.publish_bytes(topic, replay.to_bytes()).await.unwrap();
    assert!(wait_for(Duration::from_secs(10), || async { rejected() == 4 }).await, "b rejected {} of 4", rejected());
    // Two invalid messages each: -10 x 2^2, below the gossip threshold (-10), above the graylist (-80).
    for peer in [a_peer, d_peer] {
        let score = score(peer).await;
        assert!((-80.0..-10.0).contains(&score), "score of {peer}: {score}");
    }
    // A third from a puts it on the graylist: b ignores it from then on, even its valid offers.
    let mut forged_again = local::offer(&a.keypair, &network(), &pool(), 9, now_ms());
    forged_again.signature.0[9] ^= 1;
    a.handle.publish_bytes(topic, forged_again.to_bytes()).await.unwrap();
    assert!(wait_for(Duration::from_secs(10), || async { rejected() == 5 }).await);
    assert!(score(a_peer).await < -80.0);
    let ignored = local::offer(&a.keypair, &network(), &pool(), 10, now_ms());
    a.handle.publish(&ignored, None, now_ms()).await.unwrap();

    // b still forwards honest traffic, and c saw none of the invalid messages nor a's last offer.
    let honest = local::offer(&b.keypair, &network(), &pool(), 1, now_ms());
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.handle.publish(&honest, None, now_ms()).await.unwrap();
    assert_eq!(receive_until(&mut nodes[2], honest.id(), Duration::from_secs(10)).await, Some(vec![]));
    assert_eq!(Stats::get(&nodes[2].handle.stats().rejected), 0);
    assert_eq!(Stats::get(&nodes[2].handle.stats().accepted), 2);
    assert_eq!(Stats::get(&nodes[1].handle.stats().accepted), 1, "b accepted only d's first offer");
}

fn draft_of(envelope: &protocol::Envelope) -> Draft {
    Draft {
        network: envelope.network.clone(),
        nonce: envelope.nonce,
        created_ms: envelope.created_ms,
        expires_ms: envelope.expires_ms,
        body: envelope.body.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_is_throttled_while_honest_messages_arrive() {
    use kos::network::budget::{Limits, Rate};
    let network = network();
    let judge = local::start(400, &network, Transport::Tcp, |config| {
        config.kademlia = false;
        config.peer_limits =
            Limits { messages: Rate { per_s: 50, burst: 100 }, bytes: Rate { per_s: 1 << 20, burst: 1 << 22 } };
    })
    .await
    .unwrap();
    let flooder = local::start(401, &network, Transport::Tcp, |config| config.kademlia = false).await.unwrap();
    let honest = local::start(402, &network, Transport::Tcp, |config| config.kademlia = false).await.unwrap();
    let topic = Topic::pool(&pool());
    for node in [&judge, &flooder, &honest] {
        node.handle.subscribe(topic).await.unwrap();
    }
    local::connect(&flooder, &judge).await.unwrap();
    local::connect(&honest, &judge).await.unwrap();
    let nodes = [judge, flooder, honest];
    wait_for_mesh(&nodes, &[(0, 1), (0, 2)]).await;
    let [mut judge, flooder, honest] = nodes;

    let start = tokio::time::Instant::now();
    let flood: Vec<Vec<u8>> =
        (0..3_000).map(|n| local::offer(&flooder.keypair, &network, &pool(), n, now_ms()).to_bytes()).collect();
    let flooding = tokio::spawn({
        let handle = flooder.handle.clone();
        async move {
            for bytes in flood {
                let _ = handle.publish_bytes(topic, bytes).await;
            }
        }
    });
    let mut honest_ids = HashSet::new();
    for n in 0..20 {
        let offer = local::offer(&honest.keypair, &network, &pool(), n, now_ms());
        honest_ids.insert(offer.id());
        honest.handle.publish(&offer, None, now_ms()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    flooding.await.unwrap();
    let (mut from_flooder, deadline) = (0u64, tokio::time::Instant::now() + Duration::from_secs(15));
    while !honest_ids.is_empty() {
        let delivery = tokio::time::timeout_at(deadline, judge.deliveries.recv()).await;
        let delivery = delivery.unwrap_or_else(|_| panic!("{} honest offers never arrived", honest_ids.len())).unwrap();
        if delivery.envelope.author == honest.keypair.public() {
            honest_ids.remove(&delivery.id);
        } else {
            from_flooder += 1;
        }
    }
    while let Ok(delivery) = judge.deliveries.try_recv() {
        from_flooder += u64::from(delivery.envelope.author == flooder.keypair.public());
    }
    let elapsed_s = start.elapsed().as_secs() + 1;
    assert!(from_flooder <= 100 + 50 * elapsed_s, "{from_flooder} flood messages in {elapsed_s} s passed the budget");
    let over = judge.handle.over_budget(flooder.handle.peer_id()).await.unwrap();
    assert!(over > 1_000, "only {over} messages were over budget");
    let scored_down = wait_for(Duration::from_secs(5), || async {
        judge.handle.peer_score(flooder.handle.peer_id()).await.unwrap().unwrap_or(0.0) < -80.0
    })
    .await;
    assert!(scored_down, "the flooder was not scored down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_providers_are_found_through_the_dht() {
    // a - b - c with the DHT on; c serves the pool; a finds c although they are not connected.
    let network = network();
    let mut nodes = Vec::new();
    for seed in 500..503 {
        nodes.push(local::start(seed, &network, Transport::Tcp, |_| {}).await.unwrap());
    }
    local::connect(&nodes[0], &nodes[1]).await.unwrap();
    local::connect(&nodes[2], &nodes[1]).await.unwrap();
    let digest = pool().digest();
    nodes[2].handle.provide(digest).await.unwrap();
    let (a, c) = (&nodes[0], &nodes[2].handle.peer_id());
    // The DHT's own bootstrap may have connected a and c meanwhile: cut that link before asking.
    a.handle.disconnect(*c).await.unwrap();
    let apart = wait_for(Duration::from_secs(5), || async { !a.handle.info().await.unwrap().peers.contains(c) }).await;
    assert!(apart);
    let providers = a.handle.find_providers(digest).await.unwrap();
    assert!(providers.contains(c), "providers found: {providers:?}");
    let unknown = a.handle.find_providers(protocol::Id([9; 32])).await.unwrap();
    assert!(unknown.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_carries_gossip_too() {
    let mut nodes = cluster(600, 3, Transport::Quic).await;
    assert!(nodes[0].address.to_string().contains("/quic-v1/"), "{}", nodes[0].address);
    links(&nodes, &[(0, 1), (1, 2)]).await;
    let offer = local::offer(&nodes[0].keypair, &network(), &pool(), 1, now_ms());
    nodes[0].handle.publish(&offer, None, now_ms()).await.unwrap();
    assert_eq!(receive_until(&mut nodes[2], offer.id(), Duration::from_secs(10)).await, Some(vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_reachable_through_a_relay_circuit_and_upgraded_by_hole_punching() {
    use kos::network::local::Node;
    // A bootnode relays; a home reserves a slot on it (as a home behind NAT would); an outsider reaches the home
    // by dialing its circuit address through the relay.
    let network = network();
    let relay: Node = local::start(700, &network, Transport::Tcp, |config| {
        config.kademlia = false;
        config.relay_server = true;
    })
    .await
    .unwrap();
    let relay_address = relay.address.clone();
    let home = local::start(701, &network, Transport::Tcp, |config| {
        config.kademlia = false;
        config.relays = vec![relay_address.clone()];
    })
    .await
    .unwrap();
    let reserved = wait_for(Duration::from_secs(15), || async {
        home.handle.info().await.unwrap().listen.iter().any(|address| address.to_string().contains("/p2p-circuit"))
    })
    .await;
    assert!(reserved, "no relay reservation: {:?}", home.handle.info().await.unwrap().listen);
    let outsider = local::start(702, &network, Transport::Tcp, |config| config.kademlia = false).await.unwrap();
    let circuit: kos::network::Multiaddr =
        format!("{relay_address}/p2p-circuit/p2p/{}", home.handle.peer_id()).parse().unwrap();
    outsider.handle.dial(circuit).await.unwrap();
    let home_peer = home.handle.peer_id();
    let connected = wait_for(Duration::from_secs(15), || async {
        outsider.handle.info().await.unwrap().peers.contains(&home_peer)
    })
    .await;
    assert!(connected, "the outsider did not reach the home through the relay");
    // Over the relayed connection the two run DCUtR and open a direct connection (trivially, on loopback).
    let punched = wait_for(Duration::from_secs(15), || async {
        Stats::get(&home.handle.stats().hole_punched) + Stats::get(&outsider.handle.stats().hole_punched) > 0
    })
    .await;
    assert!(punched, "no direct connection upgrade (DCUtR) over the relayed connection");
}

/// Issue 28, item 3: an archive node (every block kept) announces itself in the DHT by itself, so that a node whose
/// peers all prune their history finds one and dials it by its peer id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_node_announces_itself_in_the_dht_and_is_found_and_dialed() {
    // a - b - c with the DHT on; c is an archive; a finds c although they are not connected, and dials it.
    let network = network();
    let mut nodes = Vec::new();
    for seed in 630..633 {
        nodes.push(local::start(seed, &network, Transport::Tcp, |config| config.archive = seed == 632).await.unwrap());
    }
    local::connect(&nodes[0], &nodes[1]).await.unwrap();
    local::connect(&nodes[2], &nodes[1]).await.unwrap();
    let (a, c) = (&nodes[0], nodes[2].handle.peer_id());
    let key = kos::network::archive_key(&network);
    let found = wait_for(Duration::from_secs(20), || async {
        a.handle.disconnect(c).await.unwrap();
        a.handle.find_providers(key).await.unwrap().contains(&c)
    })
    .await;
    assert!(found, "the archive did not announce itself");
    // b is no archive: only c is found.
    assert_eq!(a.handle.find_providers(key).await.unwrap(), vec![c]);
    // The lookup itself may have connected them: cut that link (again, while the DHT's own queries restore it).
    let apart = wait_for(Duration::from_secs(10), || async {
        a.handle.disconnect(c).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        !a.handle.info().await.unwrap().peers.contains(&c)
    })
    .await;
    assert!(apart);
    a.handle.dial_archives().await;
    let dialed =
        wait_for(Duration::from_secs(10), || async { a.handle.info().await.unwrap().peers.contains(&c) }).await;
    assert!(dialed, "a did not dial the archive it found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_a_pool_finds_a_provider_and_fetches_its_recent_offers() {
    // a - b - c: b and c serve the pool; offers flow; a (a newcomer, not in the pool yet) finds c through the DHT
    // and asks it for the pool's recent offers over the sync protocol.
    let network = network();
    let mut nodes = Vec::new();
    for seed in 800..803 {
        nodes.push(local::start(seed, &network, Transport::Tcp, |_| {}).await.unwrap());
    }
    local::connect(&nodes[0], &nodes[1]).await.unwrap();
    local::connect(&nodes[2], &nodes[1]).await.unwrap();
    let topic = Topic::pool(&pool());
    for node in &nodes[1..] {
        node.handle.subscribe(topic).await.unwrap();
    }
    wait_for_mesh(&nodes, &[(1, 2)]).await;
    let (b, c) = (&nodes[1], &nodes[2]);
    let offers: Vec<_> = (0..3).map(|n| local::offer(&b.keypair, &network, &pool(), n, now_ms())).collect();
    for offer in &offers {
        b.handle.publish(offer, None, now_ms()).await.unwrap();
    }
    // c has them once gossip delivered them; then b cancels the first.
    assert!(wait_for(Duration::from_secs(10), || async { Stats::get(&c.handle.stats().accepted) == 3 }).await);
    let cancel = Draft {
        network: network.clone(),
        nonce: 10,
        created_ms: now_ms(),
        expires_ms: now_ms() + 60_000,
        body: protocol::Body::Cancel(protocol::message::Cancel { offer: offers[0].id() }),
    }
    .sign(&b.keypair);
    b.handle.publish(&cancel, Some(topic), now_ms()).await.unwrap();
    assert!(wait_for(Duration::from_secs(10), || async { Stats::get(&c.handle.stats().accepted) == 4 }).await);
    c.handle.provide(pool().digest()).await.unwrap();

    let a = &nodes[0];
    let providers = a.handle.find_providers(pool().digest()).await.unwrap();
    let c_peer = c.handle.peer_id();
    assert!(providers.contains(&c_peer), "{providers:?}");
    let fetched = a.handle.recent_offers(c_peer, pool().digest(), 100, now_ms()).await.unwrap();
    let fetched: Vec<protocol::Id> = fetched.iter().map(|validated| validated.id).collect();
    assert_eq!(fetched, vec![offers[1].id(), offers[2].id()], "the cancelled offer is not served");
    let limited = a.handle.recent_offers(c_peer, pool().digest(), 1, now_ms()).await.unwrap();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].id, offers[2].id(), "the newest first when limited");
    // A pool c does not serve is refused with a reason.
    let error = a.handle.recent_offers(c_peer, protocol::Id([7; 32]), 10, now_ms()).await.unwrap_err();
    assert!(error.to_string().contains("does not serve"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_dials_a_provider_whose_record_carries_no_address() {
    // A provider that confirmed no external address announces a record without one. A newcomer that finds such a
    // provider must still reach it, at the addresses the DHT's answers and its routing table give (discarded by the
    // dial before), or by walking the DHT toward the provider's id.
    // Keys are chosen so that the provider is the farthest node from the pool's key, and the newcomer far from both:
    // none of the newcomer's own queries toward the key (its announcement, its lookup) or its own id (its bootstrap)
    // contacts the provider by chance.
    let network = network();
    let digest = pool().digest();
    let target = libp2p::kad::KBucketKey::new(libp2p::kad::RecordKey::new(&digest.0));
    let peer_of = |seed: u64| {
        let keypair = protocol::Keypair::from_seed(blake3::hash(&seed.to_le_bytes()).as_bytes());
        let identity = libp2p::identity::Keypair::ed25519_from_bytes(*keypair.seed()).unwrap();
        identity.public().to_peer_id()
    };
    let mut seeds: Vec<u64> = (900..1100).collect();
    seeds.sort_by_key(|seed| libp2p::kad::KBucketKey::from(peer_of(*seed)).distance(&target));
    // The closest is the bootnode, the next 22 fill the DHT, the farthest provides, and the newcomer is the one of
    // the farther half farthest from the provider.
    let (bootnode_seed, fillers, provider_seed) = (seeds[0], seeds[1..23].to_vec(), seeds[199]);
    let provider_key = libp2p::kad::KBucketKey::from(peer_of(provider_seed));
    let newcomer_seed = *seeds[100..199]
        .iter()
        .max_by_key(|seed| libp2p::kad::KBucketKey::from(peer_of(**seed)).distance(&provider_key))
        .unwrap();
    let bootnode = local::start(bootnode_seed, &network, Transport::Tcp, |_| {}).await.unwrap();
    let via_bootnode = |config: &mut kos::network::Config| config.bootnodes = vec![bootnode.address.clone()];
    let mut others = Vec::new();
    for seed in fillers {
        others.push(local::start(seed, &network, Transport::Tcp, via_bootnode).await.unwrap());
    }
    // AutoNAT confirms no loopback address for it (the test harness lets others confirm theirs): its record carries
    // no address, as a home's behind a NAT would.
    let provider = local::start(provider_seed, &network, Transport::Tcp, |config| {
        via_bootnode(config);
        config.autonat_only_global = true;
    })
    .await
    .unwrap();
    provider.handle.join_pool(&pool().into(), true).await.unwrap();
    let offer = local::offer(&provider.keypair, &network, &pool(), 1, now_ms());
    // Nobody else is in the pool yet: gossip has nobody to send it to, but the provider keeps it for fetches.
    let _ = provider.handle.publish(&offer, Some(Topic::pool(&pool())), now_ms()).await;
    let c = provider.handle.peer_id();
    let announced = wait_for(Duration::from_secs(20), || async {
        bootnode.handle.find_providers(digest).await.is_ok_and(|found| found.contains(&c))
    })
    .await;
    assert!(announced, "the provider's record did not reach the node closest to the key");

    let mut newcomer = local::start(newcomer_seed, &network, Transport::Tcp, via_bootnode).await.unwrap();
    assert!(!newcomer.handle.info().await.unwrap().peers.contains(&c));
    newcomer.handle.join_pool(&pool().into(), true).await.unwrap();
    let dialed = wait_for(Duration::from_secs(10), || async {
        let info = newcomer.handle.info().await.unwrap();
        info.peers.contains(&c) && info.pool_peers >= 1
    })
    .await;
    assert!(dialed, "the newcomer did not dial the provider it found: {:?}", newcomer.handle.pools().await.unwrap());
    assert!(receive_until(&mut newcomer, offer.id(), Duration::from_secs(10)).await.is_some(), "no book");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_hold() {
    let network = network();
    let hub = local::start(900, &network, Transport::Tcp, |config| {
        config.kademlia = false;
        config.peers_max = 2;
    })
    .await
    .unwrap();
    let mut spokes = Vec::new();
    for seed in 901..905 {
        let spoke = local::start(seed, &network, Transport::Tcp, |config| config.kademlia = false).await.unwrap();
        let _ = spoke.handle.dial(hub.address.clone()).await;
        spokes.push(spoke);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hub.handle.info().await.unwrap().peers.len(), 2, "the hub holds at most peers_max connections");
    let mut refused = 0;
    for spoke in &spokes {
        refused += usize::from(!spoke.handle.info().await.unwrap().peers.contains(&hub.handle.peer_id()));
    }
    assert_eq!(refused, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autonat_confirms_a_reachable_address() {
    // Each node asks the other to dial it back on its listen address and concludes it is reachable. (A dial-back
    // once failed on the per-peer connection limit: this test keeps that limit honest.)
    let network = network();
    let client = local::start(950, &network, Transport::Tcp, |config| config.kademlia = false).await.unwrap();
    let server = local::start(951, &network, Transport::Tcp, |config| config.kademlia = false).await.unwrap();
    local::connect(&server, &client).await.unwrap();
    let public =
        wait_for(Duration::from_secs(60), || async { client.handle.info().await.unwrap().nat.starts_with("public") })
            .await;
    assert!(public, "NAT status: {}", client.handle.info().await.unwrap().nat);
    let server_public =
        wait_for(Duration::from_secs(60), || async { server.handle.info().await.unwrap().nat.starts_with("public") })
            .await;
    assert!(server_public, "NAT status: {}", server.handle.info().await.unwrap().nat);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_author_out_of_fuel_is_held_back_until_it_recharges() {
    use kos::network::Credit;
    use kos::network::budget::{Limits, Rate};
    let network = network();
    // A judge whose per-peer budget is generous: only the author's fuel limits what passes. Its fuel recharges
    // slowly (10 bandwidth units a second) so that a credit stands out.
    let judge = local::start(500, &network, Transport::Tcp, |config| {
        config.kademlia = false;
        config.fuel.bandwidth.recharge_per_s = 10;
        config.peer_limits =
            Limits { messages: Rate { per_s: 10_000, burst: 10_000 }, bytes: Rate { per_s: 1 << 24, burst: 1 << 24 } };
    })
    .await
    .unwrap();
    let author = local::start(501, &network, Transport::Tcp, |config| config.kademlia = false).await.unwrap();
    let topic = Topic::pool(&pool());
    for node in [&judge, &author] {
        node.handle.subscribe(topic).await.unwrap();
    }
    local::connect(&author, &judge).await.unwrap();
    let nodes = [judge, author];
    wait_for_mesh(&nodes, &[(0, 1)]).await;
    let [mut judge, author] = nodes;

    // 400 offers as fast as the author can publish them. A newcomer starts with 250 bandwidth units and regains
    // 10 a second here; an offer is real-time work, 4 units.
    let start = tokio::time::Instant::now();
    for n in 0..400 {
        let offer = local::offer(&author.keypair, &network, &pool(), n, now_ms());
        author.handle.publish(&offer, None, now_ms()).await.unwrap();
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    let mut passed = 0u64;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), judge.deliveries.recv()).await {
        passed += 1;
    }
    let allowed = 62.0 + 2.5 * (elapsed_s + 2.5) + 1.0;
    assert!(passed as f64 <= allowed, "{passed} offers passed in {elapsed_s:.1} s, fuel allows {allowed:.0}");
    assert!(passed >= 50, "only {passed} offers passed");
    let throttled = Stats::get(&judge.handle.stats().fuel_throttled);
    assert!(throttled > 0 && throttled + passed >= 390, "{throttled} throttled, {passed} passed");
    let status = judge.handle.fuel(author.keypair.public()).await.unwrap().unwrap();
    assert!(status.throttled > 0);

    // Exported energy recharges it: 10 kWh at 50 units/kWh (bounded by the capacity of 1,000).
    let before = status.levels[1];
    judge.handle.credit(author.keypair.public(), Credit::Energy(10_000));
    let recharged = wait_for(Duration::from_secs(5), || async {
        judge.handle.fuel(author.keypair.public()).await.unwrap().is_some_and(|s| s.levels[1] >= before + 450)
    })
    .await;
    assert!(recharged, "exported energy did not recharge the author's fuel");
    let after = judge.handle.fuel(author.keypair.public()).await.unwrap().unwrap();
    assert!(after.levels[1] <= 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_readings_are_rejected_at_the_door() {
    use protocol::message::{Body, MeterSource, Reading};
    use protocol::types::MeterId;
    let network = network();
    let home = local::start(510, &network, Transport::Tcp, |config| config.kademlia = false).await.unwrap();
    let mut judge = local::start(511, &network, Transport::Tcp, |config| config.kademlia = false).await.unwrap();
    for node in [&home, &judge] {
        node.handle.subscribe(Topic::Readings).await.unwrap();
    }
    local::connect(&home, &judge).await.unwrap();
    let judge_peer = judge.handle.peer_id();
    assert!(
        wait_for(Duration::from_secs(15), || async {
            home.handle.topic_peers(Topic::Readings).await.unwrap().contains(&judge_peer)
        })
        .await
    );
    let now_s = now_ms() / 1000;
    let last_interval = now_s / 900 * 900 - 900;
    let reading = |nonce: u64, start_s: u64, generation_wh: u64| {
        let reading = Reading {
            meter: MeterId::new("main").unwrap(),
            interval_start_s: start_s,
            interval_s: 900,
            import_wh: 100,
            export_wh: 0,
            generation_wh,
            consumption_wh: 600,
            import_counter_wh: 5_000,
            export_counter_wh: 0,
            source: MeterSource::Simulated,
            device: Default::default(),
        };
        Draft {
            network: network.clone(),
            nonce,
            created_ms: now_ms(),
            expires_ms: now_ms() + 600_000,
            body: Body::Reading(reading),
        }
        .sign(&home.keypair)
    };
    // 500 Wh generated + 100 imported = 600 used: plausible. 7 MWh generated in 15 minutes: more than the door's
    // 10 MW ceiling makes (the ledger holds a meter to its own asset's limits). And one for an interval not over yet.
    let plausible = reading(1, last_interval, 500);
    let impossible = reading(2, last_interval - 900, 7_000_000);
    let early = reading(3, last_interval + 1_800, 500);
    for envelope in [&impossible, &early, &plausible] {
        home.handle.publish_bytes(Topic::Readings, envelope.to_bytes()).await.unwrap();
    }
    assert_eq!(receive_until(&mut judge, plausible.id(), Duration::from_secs(10)).await, Some(vec![]));
    assert!(wait_for(Duration::from_secs(5), || async { Stats::get(&judge.handle.stats().rejected) == 1 }).await);
    assert_eq!(Stats::get(&judge.handle.stats().ignored_stale), 1);
}

/// Offers are state a node keeps for their author, so each costs its author memory fuel; other messages do not.
/// With ten memory units and no recharge, the judge takes ten offers and then holds the author's offers back,
/// while the same author's transfers still pass (they cost bandwidth and compute, of which it has plenty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_cost_memory_fuel_and_transfers_do_not() {
    use kos::network::budget::{Limits, Rate};
    let network = network();
    let judge = local::start(520, &network, Transport::Tcp, |config| {
        config.kademlia = false;
        // A newcomer starts with a quarter of the capacity: 10 units, never recharged here.
        config.fuel.memory = energy::fuel::Budget { capacity: 40, recharge_per_s: 0 };
        config.peer_limits =
            Limits { messages: Rate { per_s: 10_000, burst: 10_000 }, bytes: Rate { per_s: 1 << 24, burst: 1 << 24 } };
    })
    .await
    .unwrap();
    let author = local::start(521, &network, Transport::Tcp, |config| config.kademlia = false).await.unwrap();
    let topic = Topic::pool(&pool());
    for node in [&judge, &author] {
        node.handle.subscribe(topic).await.unwrap();
        node.handle.subscribe(Topic::Ledger).await.unwrap();
    }
    local::connect(&author, &judge).await.unwrap();
    let nodes = [judge, author];
    wait_for_mesh(&nodes, &[(0, 1)]).await;
    let [mut judge, author] = nodes;
    let mut transfers = HashSet::new();
    for n in 0..20u64 {
        let offer = local::offer(&author.keypair, &network, &pool(), n, now_ms());
        author.handle.publish(&offer, None, now_ms()).await.unwrap();
        if n % 4 == 0 {
            let transfer = transfer(&author.keypair, 1_000 + n);
            transfers.insert(transfer.id());
            author.handle.publish(&transfer, None, now_ms()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut offers, mut passed_transfers) = (0, 0);
    while let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_secs(2), judge.deliveries.recv()).await {
        match delivery.envelope.body {
            protocol::Body::Offer(_) => offers += 1,
            protocol::Body::Transfer(_) => passed_transfers += usize::from(transfers.contains(&delivery.id)),
            _ => {}
        }
    }
    assert_eq!(offers, 10, "offers beyond the author's memory fuel passed");
    assert_eq!(passed_transfers, 5, "transfers were held back");
    assert_eq!(Stats::get(&judge.handle.stats().fuel_throttled), 10);
    let status = judge.handle.fuel(author.keypair.public()).await.unwrap().unwrap();
    assert_eq!(status.levels[2], 0, "{status:?}");
    // Each message here is under 1 KiB with one signature: compute was charged exactly as bandwidth (both
    // recharge at 200 units/s), and neither is back to its capacity yet.
    assert_eq!(status.levels[0], status.levels[1], "{status:?}");
    assert!(status.levels[0] < 1_000, "compute was not charged: {status:?}");
}

fn transfer(keypair: &protocol::Keypair, nonce: u64) -> protocol::Envelope {
    Draft {
        network: network(),
        nonce,
        created_ms: now_ms(),
        expires_ms: now_ms() + 600_000,
        body: protocol::Body::Transfer(protocol::message::Transfer {
            to: protocol::PublicKey([7; 32]),
            token: protocol::types::TokenId::new("credit").unwrap(),
            amount: 1,
            memo: protocol::types::Text::new("").unwrap(),
        }),
    }
    .sign(keypair)
}

/// Entries a node passes on together travel as one bundle (PROTOCOL.md §9) and arrive one by one, each checked as if
/// it had come alone. A bundle holding one invalid entry is rejected as a whole and goes no further, a malformed one
/// too, and one with nothing new is dropped without blame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_travel_in_bundles_and_a_bundle_with_an_invalid_entry_goes_no_further() {
    // a - b - c: a bundles, b judges, c sees only what b forwards.
    let mut nodes = Vec::new();
    for seed in 600..603 {
        let node = local::start(seed, &network(), Transport::Tcp, |config| config.kademlia = false).await.unwrap();
        node.handle.subscribe(Topic::Ledger).await.unwrap();
        nodes.push(node);
    }
    for (x, y) in [(0, 1), (1, 2)] {
        local::connect(&nodes[x], &nodes[y]).await.unwrap();
    }
    for (x, y) in [(0, 1), (1, 0), (1, 2), (2, 1)] {
        let peer = nodes[y].handle.peer_id();
        let meshed = wait_for(Duration::from_secs(15), || async {
            nodes[x].handle.topic_peers(Topic::Bundles).await.unwrap().contains(&peer)
        })
        .await;
        assert!(meshed, "node {x} has no bundle mesh link to node {y}");
    }
    let stats = |node: &Node| {
        let stats = node.handle.stats();
        (Stats::get(&stats.accepted), Stats::get(&stats.rejected), Stats::get(&stats.bundles))
    };

    // 50 transfers in one bundle reach c, one delivery each, on the ledger topic.
    let transfers: Vec<protocol::Envelope> = (0..50).map(|nonce| transfer(&nodes[0].keypair, nonce + 1)).collect();
    let bytes: Vec<Vec<u8>> = transfers.iter().map(protocol::Envelope::to_bytes).collect();
    assert_eq!(nodes[0].handle.publish_entries(&bytes).await.unwrap(), 1);
    let mut expected: HashSet<protocol::Id> = transfers.iter().map(protocol::Envelope::id).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !expected.is_empty() {
        let delivery = tokio::time::timeout_at(deadline, nodes[2].deliveries.recv()).await;
        let delivery = delivery.unwrap_or_else(|_| panic!("c misses {} entries", expected.len())).unwrap();
        assert_eq!(delivery.topic, Topic::Ledger);
        assert!(expected.remove(&delivery.id), "an unexpected or repeated entry");
    }
    // The counters are bumped right after the deliveries are handed over: wait for them.
    for node in &nodes[1..] {
        let counted = wait_for(Duration::from_secs(5), || async { stats(node) == (50, 0, 1) }).await;
        assert!(counted, "{:?}", stats(node));
    }

    // Ten new transfers, one with a broken signature: b rejects the bundle, c never sees any of them.
    let mut bad: Vec<Vec<u8>> = (0..10).map(|nonce| transfer(&nodes[0].keypair, nonce + 100).to_bytes()).collect();
    let last = bad[4].len() - 1;
    bad[4][last - 3] ^= 1;
    let slices: Vec<&[u8]> = bad.iter().map(Vec::as_slice).collect();
    nodes[0].handle.publish_bytes(Topic::Bundles, protocol::bundle::encode(&slices)).await.unwrap();
    // Malformed: an integer where an entry should be.
    nodes[0].handle.publish_bytes(Topic::Bundles, vec![0x81, 0x01]).await.unwrap();
    // Nothing new: 49 of the first 50 again.
    let again: Vec<&[u8]> = bytes[..49].iter().map(Vec::as_slice).collect();
    nodes[0].handle.publish_bytes(Topic::Bundles, protocol::bundle::encode(&again)).await.unwrap();
    // b delivered the nine valid entries of the rejected bundle to its own node, and forwarded nothing.
    let judged = wait_for(Duration::from_secs(10), || async {
        stats(&nodes[1]) == (59, 2, 1) && Stats::get(&nodes[1].handle.stats().ignored_duplicate) == 49
    })
    .await;
    assert!(judged, "b: {:?}, {} duplicates", stats(&nodes[1]), Stats::get(&nodes[1].handle.stats().ignored_duplicate));
    let score = nodes[1].handle.peer_score(nodes[0].handle.peer_id()).await.unwrap().unwrap();
    assert!(score < -10.0, "a's score at b: {score}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(nodes[2].deliveries.try_recv().is_err(), "c received something b should not have forwarded");
    assert_eq!(stats(&nodes[2]), (50, 0, 1));
}

/// What a node's own clients submit to its ledger (a feeder's reading, transfers, a cancel) it passes on each on its
/// kind's topic. Every submitted entry went on the ledger topic or in a bundle: peers rejected a reading there (it
/// belongs on the readings topic) and blamed the sender, so a validator running a cell's feeder, which submits a
/// reading every interval, fell below its peers' gossip thresholds after five intervals, received nothing more and
/// stalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_entries_travel_each_on_its_own_topic_and_cost_the_sender_nothing() {
    use protocol::message::{Body, MeterSource, Reading};
    use protocol::types::MeterId;
    let mut nodes = Vec::new();
    for seed in 610..612 {
        let node = local::start(seed, &network(), Transport::Tcp, |config| config.kademlia = false).await.unwrap();
        node.handle.subscribe(Topic::Ledger).await.unwrap();
        node.handle.subscribe(Topic::Readings).await.unwrap();
        nodes.push(node);
    }
    local::connect(&nodes[0], &nodes[1]).await.unwrap();
    let peer = nodes[1].handle.peer_id();
    for topic in [Topic::Ledger, Topic::Bundles, Topic::Readings] {
        let meshed = wait_for(Duration::from_secs(15), || async {
            nodes[0].handle.topic_peers(topic).await.unwrap().contains(&peer)
        })
        .await;
        assert!(meshed, "no {topic:?} mesh link");
    }
    let last_interval = now_ms() / 1000 / 900 * 900 - 900;
    let reading = |nonce: u64, start_s: u64| {
        let reading = Reading {
            meter: MeterId::new("feeder").unwrap(),
            interval_start_s: start_s,
            interval_s: 900,
            import_wh: 0,
            export_wh: 400,
            generation_wh: 400,
            consumption_wh: 0,
            import_counter_wh: 0,
            export_counter_wh: 400 * nonce,
            source: MeterSource::Simulated,
            device: Default::default(),
        };
        Draft {
            network: network(),
            nonce,
            created_ms: now_ms(),
            expires_ms: now_ms() + 600_000,
            body: Body::Reading(reading),
        }
        .sign(&nodes[0].keypair)
    };
    let first = reading(1, last_interval - 900);
    let second = reading(2, last_interval);
    let transfers = [transfer(&nodes[0].keypair, 3), transfer(&nodes[0].keypair, 4)];
    // A cancel is a ledger entry too: the validators need it, whether or not they are in its offer's pool.
    let cancel = Draft {
        network: network(),
        nonce: 5,
        created_ms: now_ms(),
        expires_ms: now_ms() + 600_000,
        body: Body::Cancel(protocol::message::Cancel { offer: protocol::Id([9; 32]) }),
    }
    .sign(&nodes[0].keypair);
    // A reading alone; then a reading with two transfers and a cancel: the reading alone, the others in one bundle.
    assert_eq!(nodes[0].handle.publish_entries(&[first.to_bytes()]).await.unwrap(), 1);
    let together = [second.to_bytes(), transfers[0].to_bytes(), transfers[1].to_bytes(), cancel.to_bytes()];
    assert_eq!(nodes[0].handle.publish_entries(&together).await.unwrap(), 2);
    let mut expected: HashSet<(protocol::Id, Topic)> = [(first.id(), Topic::Readings), (second.id(), Topic::Readings)]
        .into_iter()
        .chain(transfers.iter().map(|transfer| (transfer.id(), Topic::Ledger)))
        .chain([(cancel.id(), Topic::Ledger)])
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !expected.is_empty() {
        let delivery = tokio::time::timeout_at(deadline, nodes[1].deliveries.recv()).await;
        let delivery = delivery.unwrap_or_else(|_| panic!("b misses {expected:?}")).unwrap();
        assert!(
            expected.remove(&(delivery.id, delivery.topic)),
            "unexpected: {:?} on {:?}",
            delivery.id,
            delivery.topic
        );
    }
    assert_eq!(Stats::get(&nodes[1].handle.stats().rejected), 0);
    let score = nodes[1].handle.peer_score(nodes[0].handle.peer_id()).await.unwrap().unwrap();
    assert!(score >= 0.0, "a's score at b: {score}");
}

/// Issue 28, item 3: a node that prunes answers a request for blocks it no longer keeps with where it keeps them
/// from (`Pruned`), not with an empty list (which the asker would take for a lie and penalise), and serves the
/// blocks it keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_node_says_from_which_height_it_serves_blocks() {
    use kos::network::BlockSource;
    use std::sync::Arc;
    let pruned = local::start(620, &network(), Transport::Tcp, |config| {
        config.kademlia = false;
        config.blocks = Some(BlockSource(Arc::new(move |from, _, _| {
            // Keeps blocks 50 to 100.
            let stored = ledger::store::Stored { block: vec![1, 2, 3], certificate: vec![4] };
            let blocks = if (50..=100).contains(&from) { vec![stored] } else { Vec::new() };
            (100, 50, blocks)
        })));
    })
    .await
    .unwrap();
    let asker = local::start(621, &network(), Transport::Tcp, |config| config.kademlia = false).await.unwrap();
    local::connect(&asker, &pruned).await.unwrap();
    let peer = pruned.handle.peer_id();
    let error = asker.handle.blocks(peer, 1, 10).await.expect_err("block 1 is pruned");
    assert!(error.to_string().contains("keeps blocks from 50 on (tip 100)"), "{error}");
    let (tip, blocks) = asker.handle.blocks(peer, 60, 10).await.unwrap();
    assert_eq!((tip, blocks.len()), (100, 1));
}

/// Review of issue 26: a node that cancels an offer while its pool's mesh is empty (a partition) sends the cancel
/// again when the mesh comes back, so a peer that holds the offer stops matching it. Nothing else brings it: a
/// pool's recent offers carry no cancels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_made_during_a_partition_reaches_the_pool_when_it_heals() {
    let mut nodes = Vec::new();
    for seed in [9_101, 9_102] {
        let node = local::start(seed, &network(), Transport::Tcp, |config| config.kademlia = false).await.unwrap();
        node.handle.join_pool(&pool().into(), true).await.unwrap();
        nodes.push(node);
    }
    links(&nodes, &[(0, 1)]).await;
    let offer = local::offer(&nodes[0].keypair, &network(), &pool(), 1, now_ms());
    nodes[0].handle.publish(&offer, None, now_ms()).await.unwrap();
    assert!(receive_until(&mut nodes[1], offer.id(), Duration::from_secs(10)).await.is_some(), "the offer arrived");

    // A partition: the link goes, and the first node's discovery sees its mesh for the pool empty.
    nodes[0].handle.disconnect(nodes[1].handle.peer_id()).await.unwrap();
    let apart = wait_for(Duration::from_secs(10), || async {
        nodes[0].handle.info().await.is_ok_and(|info| info.peers.is_empty())
    })
    .await;
    assert!(apart, "the nodes did not part");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let created_ms = now_ms();
    let cancel = Draft {
        network: network(),
        nonce: 2,
        created_ms,
        expires_ms: created_ms + 600_000,
        body: protocol::Body::Cancel(protocol::message::Cancel { offer: offer.id() }),
    }
    .sign(&nodes[0].keypair);
    let sent = nodes[0].handle.publish(&cancel, Some(Topic::pool(&pool())), created_ms).await;
    assert!(sent.is_err(), "nobody to send the cancel to during the partition");

    // The partition heals: the cancel is published again and reaches the other node.
    local::connect(&nodes[0], &nodes[1]).await.unwrap();
    let arrived = receive_until(&mut nodes[1], cancel.id(), Duration::from_secs(15)).await;
    assert!(arrived.is_some(), "the cancel never reached the other node");
}
