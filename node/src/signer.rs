//! The node's one signer. Every part of the node that signs with the node's key — the API, the meter, the market —
//! signs through it, so the nonces of the key's messages strictly increase across all of them, and across restarts.
//!
//! Receivers drop a second message with a nonce its author already used (PROTOCOL.md §9: a replay, counted against
//! the peer that forwarded it), so two parts of one node that picked the same nonce lost a message and cost an honest
//! forwarder its score. Nonces are `max(last + 1, created_ms × 1000)`: they follow the clock in microseconds, so a
//! node whose data directory is lost still continues above its old ones, and a reservation on disk
//! (`<data-dir>/nonce.reserved`: every nonce handed out is below it) keeps them increasing when the clock steps back
//! or the node restarts within a millisecond. The reservation is written, synced, before a nonce at or past it is
//! handed out, about every [`NONCES_RESERVED_AHEAD`] microseconds of the clock.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use protocol::{Body, Draft, Envelope, Keypair, NetworkId, PublicKey};

/// How far ahead of the last nonce handed out the reservation on disk is set: ten minutes of the clock's
/// microseconds.
pub const NONCES_RESERVED_AHEAD: u64 = 600_000_000;

/// The reservation file in a data directory.
pub const RESERVATION_FILE: &str = "nonce.reserved";

/// Signs the node's messages; see the module docs. Shared by reference (`Arc<Signer>`).
#[derive(Debug)]
pub struct Signer {
    keypair: Arc<Keypair>,
    network: NetworkId,
    nonces: Mutex<Nonces>,
}

#[derive(Debug)]
struct Nonces {
    last: u64,
    /// Every nonce handed out is below it.
    reserved: u64,
    /// Where the reservation is kept; `None`: only in memory (tests, benchmarks).
    path: Option<PathBuf>,
}

impl Nonces {
    /// The next nonce for a message created at `created_ms`, reserving more on disk first when needed.
    fn next(&mut self, created_ms: u64) -> anyhow::Result<u64> {
        let nonce = self.last.saturating_add(1).max(created_ms.saturating_mul(1000));
        anyhow::ensure!(nonce > self.last, "the key's nonces are used up");
        if nonce >= self.reserved {
            let reserved = nonce.saturating_add(NONCES_RESERVED_AHEAD);
            if let Some(path) = &self.path {
                write_reservation(path, reserved)?;
            }
            self.reserved = reserved;
        }
        self.last = nonce;
        Ok(nonce)
    }
}

/// Writes the reservation atomically (a new file, synced, renamed over the old one).
fn write_reservation(path: &Path, reserved: u64) -> anyhow::Result<()> {
    let temporary = path.with_extension("reserved.new");
    let mut file = std::fs::File::create(&temporary).with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(reserved.to_string().as_bytes())?;
    file.sync_all().with_context(|| format!("syncing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

impl Signer {
    /// The signer of a node whose data directory is `data_dir`: continues above every nonce handed out before.
    pub fn open(data_dir: &Path, keypair: Arc<Keypair>, network: NetworkId, now_ms: u64) -> anyhow::Result<Signer> {
        let path = data_dir.join(RESERVATION_FILE);
        let reserved = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().with_context(|| {
                format!("{} does not hold a nonce ({text:?}); delete it only if this key never signed", path.display())
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        };
        let mut nonces = Nonces { last: reserved.saturating_sub(1), reserved, path: Some(path) };
        // Reserve now, so that a data directory the node cannot write is an error at start, not at the first message.
        let first = nonces.last.saturating_add(1).max(now_ms.saturating_mul(1000));
        let reserved = first.saturating_add(NONCES_RESERVED_AHEAD);
        if let Some(path) = &nonces.path {
            write_reservation(path, reserved)?;
        }
        nonces.reserved = reserved;
        Ok(Signer { keypair, network, nonces: Mutex::new(nonces) })
    }

    /// A signer that keeps its nonces in memory only (tests and benchmarks).
    pub fn in_memory(keypair: Arc<Keypair>, network: NetworkId) -> Signer {
        Signer { keypair, network, nonces: Mutex::new(Nonces { last: 0, reserved: 0, path: None }) }
    }

    pub fn public(&self) -> PublicKey {
        self.keypair.public()
    }

    pub fn network(&self) -> &NetworkId {
        &self.network
    }

    /// Signs `body` as created at `created_ms`, expiring at `expires_ms`, with the key's next nonce.
    pub fn sign(&self, body: Body, created_ms: u64, expires_ms: u64) -> anyhow::Result<Envelope> {
        let nonce = {
            let mut nonces = self.nonces.lock().map_err(|_| anyhow::anyhow!("the signer's lock is poisoned"))?;
            nonces.next(created_ms)?
        };
        Ok(Draft { network: self.network.clone(), nonce, created_ms, expires_ms, body }.sign(&self.keypair))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::message::{Cancel, Transfer};
    use protocol::types::{Text, TokenId};

    const NOW_MS: u64 = 1_800_000_000_000;

    fn network() -> NetworkId {
        NetworkId::new("kos-signer").unwrap()
    }

    fn body(n: u64) -> Body {
        if n.is_multiple_of(2) {
            Body::Cancel(Cancel { offer: protocol::Id([n as u8; 32]) })
        } else {
            Body::Transfer(Transfer {
                to: PublicKey([7; 32]),
                token: TokenId::new("credit").unwrap(),
                amount: n,
                memo: Text::new("").unwrap(),
            })
        }
    }

    /// Issue 25, defect 6: the API, the meter and the market each kept a nonce for the node's key, and the meter's
    /// and the market's gave `ms × 1000 + 1` in the same millisecond — at interval boundaries, when both sign. Three
    /// paths signing at once, all in one millisecond, now never share a nonce, and each sees its own increase.
    #[test]
    fn three_paths_signing_at_once_never_share_a_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let keypair = Arc::new(Keypair::from_seed(&[1; 32]));
        let signer = Arc::new(Signer::open(dir.path(), keypair, network(), NOW_MS).unwrap());
        let paths: Vec<_> = ["api", "meter", "market"]
            .into_iter()
            .map(|path| {
                let signer = signer.clone();
                std::thread::Builder::new()
                    .name(path.into())
                    .spawn(move || {
                        (0..2_000)
                            .map(|n| signer.sign(body(n), NOW_MS, NOW_MS + 60_000).unwrap().nonce)
                            .collect::<Vec<u64>>()
                    })
                    .unwrap()
            })
            .collect();
        let mut all = Vec::new();
        for path in paths {
            let nonces = path.join().unwrap();
            assert!(nonces.windows(2).all(|pair| pair[0] < pair[1]), "one path's nonces increase");
            all.extend(nonces);
        }
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "no nonce was handed out twice");
        assert!(all[0] >= NOW_MS * 1000);
    }

    /// After a restart the nonces continue above the last one handed out, even when the clock went back an hour.
    #[test]
    fn a_restart_continues_above_every_nonce_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let keypair = Arc::new(Keypair::from_seed(&[1; 32]));
        let last = {
            let signer = Signer::open(dir.path(), keypair.clone(), network(), NOW_MS).unwrap();
            (0..100).map(|n| signer.sign(body(n), NOW_MS + n, NOW_MS + 60_000).unwrap().nonce).max().unwrap()
        };
        let earlier = NOW_MS - 3_600_000;
        let signer = Signer::open(dir.path(), keypair.clone(), network(), earlier).unwrap();
        let next = signer.sign(body(1), earlier, earlier + 60_000).unwrap().nonce;
        assert!(next > last, "{next} after {last}");
        // Far past the reservation, a new one is written first.
        let later = NOW_MS + 3_600_000;
        let far = signer.sign(body(2), later, later + 60_000).unwrap().nonce;
        drop(signer);
        let signer = Signer::open(dir.path(), keypair, network(), NOW_MS).unwrap();
        assert!(signer.sign(body(3), NOW_MS, NOW_MS + 60_000).unwrap().nonce > far);
    }

    #[test]
    fn a_damaged_reservation_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RESERVATION_FILE), "twelve").unwrap();
        let error = Signer::open(dir.path(), Arc::new(Keypair::from_seed(&[1; 32])), network(), NOW_MS).unwrap_err();
        assert!(format!("{error:#}").contains("does not hold a nonce"), "{error:#}");
    }
}
