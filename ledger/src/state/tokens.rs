//! Tokens: balances, supplies, issuance rules and the entry fee.

use protocol::PublicKey;
use protocol::types::TokenId;

use super::read::{Kv, prefixed, value};
use super::{BALANCE, ISSUANCE, SUPPLY, balance_key, key};

/// Reads of tokens (see [`Kv`]).
pub trait TokenReads: Kv {
    fn balance(&self, account: &PublicKey, token: &TokenId) -> u64 {
        value(self, &balance_key(account, token)).unwrap_or(0)
    }

    fn supply(&self, token: &TokenId) -> u64 {
        value(self, &key(SUPPLY, &[token.as_str().as_bytes()])).unwrap_or(0)
    }

    /// Every account's balance of every token (a scan of all balances: not for a request's path).
    fn balances(&self) -> impl Iterator<Item = (PublicKey, TokenId, u64)> + '_ {
        self.balances_after(None)
    }

    /// Every balance of the accounts after `after` (all accounts without it), in account order: a page of the
    /// accounts starts where the last one ended.
    fn balances_after(&self, after: Option<&PublicKey>) -> impl Iterator<Item = (PublicKey, TokenId, u64)> + '_ {
        let start = match after {
            Some(account) => key(BALANCE, &[account.as_bytes(), &[0xff]]),
            None => vec![BALANCE],
        };
        self.range(&start, &[BALANCE + 1]).filter_map(|(key, value)| {
            let account = PublicKey(key.get(1..33)?.try_into().ok()?);
            let token = TokenId::new(std::str::from_utf8(key.get(33..)?).ok()?).ok()?;
            Some((account, token, super::decode(&value)?))
        })
    }

    /// One account's balances, by token.
    fn account_balances(&self, account: &PublicKey) -> Vec<(TokenId, u64)> {
        prefixed(self, &key(BALANCE, &[account.as_bytes()]))
            .filter_map(|(key, value)| {
                let token = TokenId::new(std::str::from_utf8(key.get(33..)?).ok()?).ok()?;
                Some((token, super::decode(&value)?))
            })
            .collect()
    }

    /// A token's issuance rule as governance last changed it (`None`: the genesis' holds).
    fn issuance(&self, token: &TokenId) -> Option<protocol::message::IssuanceRule> {
        value(self, &key(ISSUANCE, &[token.as_str().as_bytes()]))
    }

    /// The fee every entry's author pays (PROTOCOL.md §10): `fee_per_entry` milli-units of the fee token, or `None`
    /// when entries are free.
    fn entry_fee(&self) -> Option<(TokenId, u64)> {
        let fee = super::GovernanceReads::param(self, "fee_per_entry");
        let token = TokenId::new(self.genesis().params.fee_token.clone()).ok()?;
        (fee > 0).then_some((token, fee))
    }
}

impl<K: Kv + ?Sized> TokenReads for K {}
