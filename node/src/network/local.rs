//! Many nodes in one process on loopback sockets: the harness of the multi-node tests and of `kos bench gossip`.
//! Each node is a full network task with its own swarm, key and real TCP or QUIC sockets on 127.0.0.1.

use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use protocol::message::{Body, Offer, PoolId, Side};
use protocol::{Draft, Envelope, Keypair, NetworkId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Config, Delivery, Handle, spawn, wait_for};

/// Which transport the local nodes listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Quic,
}

/// A node of a local cluster.
pub struct Node {
    pub handle: Handle,
    pub deliveries: mpsc::Receiver<Delivery>,
    pub keypair: Keypair,
    pub task: JoinHandle<()>,
    /// The node's first listen address, with `/p2p/<peer id>`.
    pub address: Multiaddr,
}

/// The loopback listen address for a transport, on a free port.
pub fn loopback(transport: Transport) -> Multiaddr {
    let address = match transport {
        Transport::Tcp => "/ip4/127.0.0.1/tcp/0",
        Transport::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
    };
    address.parse().unwrap_or_else(|error| unreachable!("{error}"))
}

/// Starts one node with key `seed`, the config adjusted by `adjust`.
pub async fn start(
    seed: u64,
    network: &NetworkId,
    transport: Transport,
    adjust: impl Fn(&mut Config),
) -> anyhow::Result<Node> {
    let mut config = Config::new(network.clone(), vec![loopback(transport)]);
    config.autonat_only_global = false;
    adjust(&mut config);
    let keypair = Keypair::from_seed(blake3::hash(&seed.to_le_bytes()).as_bytes());
    let (handle, deliveries, task) = spawn(config, &keypair).await?;
    let info = handle.info().await?;
    let first = info.listen.first().cloned().ok_or_else(|| anyhow::anyhow!("node {seed} is not listening"))?;
    let address = first.with(Protocol::P2p(info.peer_id));
    Ok(Node { handle, deliveries, keypair, task, address })
}

/// Connects `from` to `to` and waits until both see the connection.
pub async fn connect(from: &Node, to: &Node) -> anyhow::Result<()> {
    from.handle.dial(to.address.clone()).await?;
    let (a, b) = (from.handle.peer_id(), to.handle.peer_id());
    let connected = wait_for(Duration::from_secs(10), || async {
        let (from_info, to_info) = (from.handle.info().await, to.handle.info().await);
        matches!((from_info, to_info), (Ok(x), Ok(y)) if x.peers.contains(&b) && y.peers.contains(&a))
    })
    .await;
    anyhow::ensure!(connected, "{a} and {b} did not connect");
    Ok(())
}

/// A valid offer by `keypair` in `pool`, created now, with the given nonce.
pub fn offer(keypair: &Keypair, network: &NetworkId, pool: &PoolId, nonce: u64, now_ms: u64) -> Envelope {
    let delivery_start_s = pool.next_delivery_start_s(now_ms / 1000);
    Draft {
        network: network.clone(),
        nonce,
        created_ms: now_ms,
        expires_ms: now_ms + 900_000,
        body: Body::Offer(Offer {
            pool: pool.clone(),
            side: if nonce.is_multiple_of(2) { Side::Bid } else { Side::Ask },
            quantity: 100 + nonce % 1000,
            unit_price: 250,
            delivery_start_s,
        }),
    }
    .sign(keypair)
}

pub use crate::clock::now_ms;
