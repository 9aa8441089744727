//! Key files: the node's ed25519 secret seed, one line of text, readable by its owner only.
//!
//! Format: `kos-ed25519-secret-v1 <64 lowercase hex digits>` and a newline. The same key signs kos messages and is
//! the node's libp2p identity, so the peer id follows from it.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use protocol::Keypair;

const HEADER: &str = "kos-ed25519-secret-v1";

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no key file at {path}: create one with `kos keys generate`")]
    Missing { path: PathBuf },
    #[error(
        "key file {path} is readable by group or others (mode {mode:04o}); a secret key must be private: run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("key file {path} exists already; pass --force to replace it (the old key is lost)")]
    Exists { path: PathBuf },
    #[error("key file {path} is not a kos key file: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("key file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_owned(), source }
}

/// Reads a key file, refusing one that group or others can read or write.
pub fn read(path: &Path) -> Result<Keypair, Error> {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Missing { path: path.to_owned() });
        }
        Err(error) => return Err(io_error(path)(error)),
    };
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::TooOpen { path: path.to_owned(), mode });
    }
    if metadata.len() > 256 {
        return Err(Error::Malformed { path: path.to_owned(), reason: format!("{} bytes, too long", metadata.len()) });
    }
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    parse(&text).map_err(|reason| Error::Malformed { path: path.to_owned(), reason })
}

fn parse(text: &str) -> Result<Keypair, String> {
    let (header, secret) = text.trim().split_once(' ').ok_or("want `kos-ed25519-secret-v1 <hex>`")?;
    if header != HEADER {
        return Err(format!("unknown header {header:?}, want {HEADER:?}"));
    }
    let mut seed = [0u8; 32];
    hex::decode_to_slice(secret.trim(), &mut seed).map_err(|error| format!("secret: {error}"))?;
    Ok(Keypair::from_seed(&seed))
}

/// Writes a new key file with mode 0600 (its directory 0700 if created). Refuses to replace a file unless `force`.
pub fn write(path: &Path, keypair: &Keypair, force: bool) -> Result<(), Error> {
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(io_error(parent))?;
    }
    if path.exists() && !force {
        return Err(Error::Exists { path: path.to_owned() });
    }
    // Write a private temporary file, then rename it over the target: the key is never readable by others,
    // and a crash leaves either the old key or the new one.
    let temporary = path.with_extension("tmp");
    let _ = fs::remove_file(&temporary);
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary).map_err(io_error(&temporary))?;
    let line = format!("{HEADER} {}\n", hex::encode(keypair.seed()));
    file.write_all(line.as_bytes()).map_err(io_error(&temporary))?;
    file.sync_all().map_err(io_error(&temporary))?;
    fs::rename(&temporary, path).map_err(io_error(path))?;
    Ok(())
}

/// The peer id of a node whose key is `key` (the libp2p identity is the node's ed25519 key).
pub fn peer_id_of(key: &protocol::PublicKey) -> anyhow::Result<libp2p_identity::PeerId> {
    let public = libp2p_identity::ed25519::PublicKey::try_from_bytes(key.as_bytes())
        .map_err(|error| anyhow::anyhow!("not an ed25519 public key: {error}"))?;
    Ok(libp2p_identity::PublicKey::from(public).to_peer_id())
}

/// The libp2p peer id of a key (the same ed25519 key as the node's libp2p identity).
pub fn peer_id(keypair: &Keypair) -> libp2p_identity::PeerId {
    let mut seed = *keypair.seed();
    match libp2p_identity::Keypair::ed25519_from_bytes(&mut seed) {
        Ok(identity) => identity.public().to_peer_id(),
        Err(error) => unreachable!("any 32 bytes are an ed25519 secret key: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peer id a founder's public key gives (for the bootnodes file) is the one its node has.
    #[test]
    fn the_peer_id_of_a_public_key_is_its_nodes() {
        for seed in [[1u8; 32], [7; 32], [200; 32]] {
            let keypair = Keypair::from_seed(&seed);
            assert_eq!(peer_id_of(&keypair.public()).unwrap(), peer_id(&keypair));
        }
    }

    #[test]
    fn written_keys_are_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/node.key");
        let keypair = Keypair::from_seed(&[5; 32]);
        write(&path, &keypair, false).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read(&path).unwrap().public(), keypair.public());
        assert!(matches!(write(&path, &Keypair::generate(), false), Err(Error::Exists { .. })));
        assert_eq!(read(&path).unwrap().public(), keypair.public(), "a refused write keeps the old key");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let error = read(&path).unwrap_err();
        assert!(matches!(error, Error::TooOpen { mode: 0o640, .. }));
        assert!(error.to_string().contains("chmod 600"));
    }

    #[test]
    fn malformed_files_are_errors() {
        assert!(parse("kos-ed25519-secret-v1 00").is_err());
        assert!(parse("other 0000000000000000000000000000000000000000000000000000000000000000").is_err());
        assert!(parse("").is_err());
        let peer = peer_id(&Keypair::from_seed(&[1; 32]));
        assert!(peer.to_string().starts_with("12D3KooW"));
    }
}
