//! The genesis file: the network id, the first validators, the tokens and their issuance rules, the first
//! balances and the ledger's parameters. Every node of a network starts from the same file; its hash is the
//! parent of block 1, so two nodes with different genesis files never agree on a block.
//!
//! The file is TOML; amounts are token milli-units (integers), keys are hex.
//!
//! ```toml
//! network = "kos-devnet"
//! time_ms = 1767225600000
//!
//! [[validators]]
//! name = "v1"
//! key = "<64 hex digits>"
//! power = 1
//!
//! [[tokens]]
//! id = "credit"
//! kind = "stable"            # or "mission"
//! issuers = ["<64 hex>"]     # who may mint; empty: supply is fixed at genesis
//! supply_max = 0             # 0: no cap
//! export_reward_per_kwh = 0  # milli-units minted to a meter owner per kWh exported (mission tokens)
//!
//! [[balances]]
//! account = "<64 hex>"
//! token = "credit"
//! amount = 100000000
//!
//! [params]                   # every field optional; defaults below
//! ```

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context as _, bail, ensure};
use protocol::types::TokenId;
use protocol::{NetworkId, PublicKey};
use serde::{Deserialize, Serialize};

use crate::hash::{self, Hash};

/// The ledger's tunable parameters. Governance may change those marked so (by name, see [`Params::set`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Most entries in one block.
    pub block_entries_max: u32,
    /// Most bytes of one encoded block.
    pub block_bytes_max: u32,
    /// The token fees are paid in.
    pub fee_token: String,
    /// Fee per entry, milli-units of `fee_token`, paid by the entry's author to the commons account (governable).
    pub fee_per_entry: u64,
    /// How long after the end of a delivery interval an energy settlement's escrow is released (governable).
    pub settlement_grace_ms: u64,
    /// Share of voting power (percent) whose yes votes pass a governance proposal (governable).
    pub governance_threshold_percent: u64,
    /// Longest voting period of a proposal, in blocks.
    pub voting_period_blocks_max: u32,
    /// Largest clock skew allowed between a block's time and an entry's creation time.
    pub clock_skew_ms_max: u64,
    /// Longest lifetime of an entry.
    pub entry_lifetime_ms_max: u64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            block_entries_max: 10_000,
            block_bytes_max: 4 * 1024 * 1024,
            fee_token: "credit".to_owned(),
            fee_per_entry: 0,
            settlement_grace_ms: 15 * 60 * 1000,
            governance_threshold_percent: 67,
            voting_period_blocks_max: 100_000,
            clock_skew_ms_max: protocol::validate::Config::CLOCK_SKEW_MS_MAX_DEFAULT,
            entry_lifetime_ms_max: protocol::validate::Config::LIFETIME_MS_MAX_DEFAULT,
        }
    }
}

impl Params {
    /// The parameters governance may change, by name.
    pub const GOVERNABLE: &'static [&'static str] =
        &["fee_per_entry", "settlement_grace_ms", "governance_threshold_percent"];

    /// Applies a governance change; `false` when the name is not governable or the value is out of range.
    pub fn set(&mut self, name: &str, value: u64) -> bool {
        match name {
            "fee_per_entry" => self.fee_per_entry = value,
            "settlement_grace_ms" => self.settlement_grace_ms = value,
            "governance_threshold_percent" if (51..=100).contains(&value) => self.governance_threshold_percent = value,
            _ => return false,
        }
        true
    }
}

/// Whether a token is the stable credit or a mission token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Stable,
    Mission,
}

/// A token and its issuance rules, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    pub id: String,
    pub kind: TokenKind,
    #[serde(default)]
    pub issuers: Vec<String>,
    #[serde(default)]
    pub supply_max: u64,
    #[serde(default)]
    pub export_reward_per_kwh: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorFile {
    pub name: String,
    pub key: String,
    pub power: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceFile {
    pub account: String,
    pub token: String,
    pub amount: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenesisFile {
    network: String,
    time_ms: u64,
    validators: Vec<ValidatorFile>,
    #[serde(default)]
    tokens: Vec<TokenFile>,
    #[serde(default)]
    balances: Vec<BalanceFile>,
    #[serde(default)]
    params: Params,
}

/// A validator of the genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisValidator {
    pub name: String,
    pub key: PublicKey,
    pub power: u64,
}

/// A token with its issuance rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: TokenId,
    pub kind: TokenKind,
    /// Accounts allowed to mint it. Empty: the supply is what the genesis allocates.
    pub issuers: BTreeSet<PublicKey>,
    /// Largest total supply in milli-units; `None`: no cap.
    pub supply_max: Option<u64>,
    /// Milli-units minted to a meter's owner per kWh its anchored readings export.
    pub export_reward_per_kwh: u64,
}

/// A checked genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    pub network: NetworkId,
    pub time_ms: u64,
    pub validators: Vec<GenesisValidator>,
    pub tokens: Vec<Token>,
    pub balances: Vec<(PublicKey, TokenId, u64)>,
    pub params: Params,
    /// `blake3("kos/v1/genesis" || 0x00 || file bytes)`: the parent hash of block 1.
    pub hash: Hash,
    /// The file's text, as read (exports carry it).
    pub text: String,
}

/// Most validators a genesis (and governance) may name.
pub const VALIDATORS_MAX: usize = 256;

impl Genesis {
    /// Reads and checks a genesis file.
    pub fn load(path: &Path) -> anyhow::Result<Genesis> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading genesis {}", path.display()))?;
        Genesis::parse(&text).with_context(|| format!("genesis {}", path.display()))
    }

    /// Parses and checks genesis text.
    pub fn parse(text: &str) -> anyhow::Result<Genesis> {
        let file: GenesisFile = toml::from_str(text)?;
        let network = NetworkId::new(file.network.clone()).map_err(|error| anyhow::anyhow!("network: {error}"))?;
        ensure!(!file.validators.is_empty(), "at least one validator is needed");
        ensure!(file.validators.len() <= VALIDATORS_MAX, "more than {VALIDATORS_MAX} validators");
        let mut keys = BTreeSet::new();
        let mut validators = Vec::new();
        let mut power_total: u64 = 0;
        for validator in &file.validators {
            let key = parse_key(&validator.key).with_context(|| format!("validator {}", validator.name))?;
            ensure!(validator.power > 0, "validator {}: power must be more than 0", validator.name);
            ensure!(keys.insert(key), "validator {} is listed twice", validator.name);
            power_total = power_total.checked_add(validator.power).context("total voting power overflows")?;
            validators.push(GenesisValidator { name: validator.name.clone(), key, power: validator.power });
        }
        ensure!(power_total <= u64::MAX / 1000, "total voting power too large");
        let mut tokens = Vec::new();
        for token in &file.tokens {
            let id = TokenId::new(token.id.clone()).map_err(|error| anyhow::anyhow!("token {}: {error}", token.id))?;
            ensure!(!tokens.iter().any(|known: &Token| known.id == id), "token {} is listed twice", token.id);
            let issuers = token.issuers.iter().map(|key| parse_key(key)).collect::<anyhow::Result<BTreeSet<_>>>()?;
            tokens.push(Token {
                id,
                kind: token.kind,
                issuers,
                supply_max: (token.supply_max > 0).then_some(token.supply_max),
                export_reward_per_kwh: token.export_reward_per_kwh,
            });
        }
        let mut balances = Vec::new();
        for balance in &file.balances {
            let account = parse_key(&balance.account)?;
            let token = TokenId::new(balance.token.clone()).map_err(|error| anyhow::anyhow!("{error}"))?;
            ensure!(tokens.iter().any(|known| known.id == token), "balance in unknown token {}", balance.token);
            balances.push((account, token, balance.amount));
        }
        let params = file.params.clone();
        ensure!(params.block_entries_max > 0, "params.block_entries_max must be more than 0");
        ensure!(params.block_bytes_max >= 64 * 1024, "params.block_bytes_max must be at least 65536");
        ensure!((51..=100).contains(&params.governance_threshold_percent), "governance_threshold_percent: 51..=100");
        if params.fee_per_entry > 0 {
            ensure!(
                tokens.iter().any(|token| token.id.as_str() == params.fee_token),
                "fee token {} is not a token of the genesis",
                params.fee_token
            );
        }
        let hash = hash::tagged("kos/v1/genesis", &[text.as_bytes()]);
        Ok(Genesis {
            network,
            time_ms: file.time_ms,
            validators,
            tokens,
            balances,
            params,
            hash,
            text: text.to_owned(),
        })
    }

    /// A genesis text for tests and devnets: the given validators (power 1 each), a stable `credit` token that
    /// the first validator may mint, a mission token `eco` rewarded for exported energy, and `amount` credits to
    /// each of `funded`.
    pub fn devnet_text(
        network: &str,
        time_ms: u64,
        validators: &[PublicKey],
        funded: &[PublicKey],
        amount: u64,
    ) -> String {
        let mut text = format!("network = \"{network}\"\ntime_ms = {time_ms}\n");
        for (index, key) in validators.iter().enumerate() {
            text.push_str(&format!(
                "\n[[validators]]\nname = \"v{}\"\nkey = \"{}\"\npower = 1\n",
                index + 1,
                key.to_hex()
            ));
        }
        let issuer = validators.first().map(|key| format!("\"{}\"", key.to_hex())).unwrap_or_default();
        text.push_str(&format!(
            "\n[[tokens]]\nid = \"credit\"\nkind = \"stable\"\nissuers = [{issuer}]\n\n[[tokens]]\nid = \"eco\"\nkind = \"mission\"\nexport_reward_per_kwh = 1000\n"
        ));
        for key in funded {
            text.push_str(&format!(
                "\n[[balances]]\naccount = \"{}\"\ntoken = \"credit\"\namount = {amount}\n",
                key.to_hex()
            ));
        }
        text
    }

    /// The token rules by id.
    pub fn token(&self, id: &TokenId) -> Option<&Token> {
        self.tokens.iter().find(|token| &token.id == id)
    }
}

fn parse_key(text: &str) -> anyhow::Result<PublicKey> {
    let key = PublicKey::from_hex(text).map_err(|error| anyhow::anyhow!("key {text:?}: {error}"))?;
    if protocol::keys::verifying_key(&key).is_err() {
        bail!("key {text} is not a valid ed25519 public key");
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Keypair;

    #[test]
    fn devnet_genesis_parses_and_hashes_its_bytes() {
        let keys: Vec<PublicKey> = (0..4u8).map(|i| Keypair::from_seed(&[i; 32]).public()).collect();
        let text = Genesis::devnet_text("kos-test", 1_000, &keys, &keys[..1], 5_000);
        let genesis = Genesis::parse(&text).unwrap();
        assert_eq!(genesis.validators.len(), 4);
        assert_eq!(genesis.tokens.len(), 2);
        assert_eq!(genesis.balances.len(), 1);
        let other = Genesis::parse(&format!("{text}\n")).unwrap();
        assert_ne!(genesis.hash, other.hash, "the hash covers the file's bytes");
    }

    #[test]
    fn bad_genesis_files_say_what_is_wrong() {
        let key = Keypair::from_seed(&[1; 32]).public().to_hex();
        let cases = [
            ("network = \"x\"\ntime_ms = 0\nvalidators = []\n", "at least one validator"),
            (
                &format!("network = \"x\"\ntime_ms = 0\n[[validators]]\nname=\"a\"\nkey=\"{key}\"\npower=0\n"),
                "power must be more than 0",
            ),
            (
                &format!(
                    "network = \"x\"\ntime_ms = 0\n[[validators]]\nname=\"a\"\nkey=\"{key}\"\npower=1\n[[validators]]\nname=\"b\"\nkey=\"{key}\"\npower=1\n"
                ),
                "listed twice",
            ),
            (
                &format!(
                    "network = \"x\"\ntime_ms = 0\n[[validators]]\nname=\"a\"\nkey=\"{key}\"\npower=1\n[[balances]]\naccount=\"{key}\"\ntoken=\"gold\"\namount=1\n"
                ),
                "unknown token",
            ),
        ];
        for (text, expected) in cases {
            let error = format!("{:#}", Genesis::parse(text).unwrap_err());
            assert!(error.contains(expected), "{error}");
        }
    }
}
