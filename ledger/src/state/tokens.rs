//! Tokens: balances, supplies, issuance rules and the entry fee.

use super::*;
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

/// Execution of tokens entries.
impl Pending<'_> {
    /// A mint by one of the token's issuers.
    pub(super) fn mint_entry(&mut self, author: &PublicKey, mint: &protocol::message::Mint) -> Result<(), EntryError> {
        let author = *author;
        let rules = self.token_rules(&mint.token).ok_or_else(|| EntryError::UnknownToken(mint.token.clone()))?;
        if !rules.issuers.contains(&author) {
            return Err(EntryError::NotIssuer(author));
        }
        self.mint(&mint.to, &mint.token, mint.amount)
    }

    /// A burn of the author's own tokens.
    pub(super) fn burn(&mut self, author: &PublicKey, burn: &protocol::message::Burn) -> Result<(), EntryError> {
        if self.base.genesis.token(&burn.token).is_none() {
            return Err(EntryError::UnknownToken(burn.token.clone()));
        }
        self.debit(author, &burn.token, burn.amount)?;
        self.change_supply(&burn.token, 0, burn.amount)
    }

    /// Adds to a balance. A balance of 0 is never stored (PROTOCOL.md §10, `b`): crediting 0 writes nothing.
    pub(super) fn credit(&mut self, account: &PublicKey, token: &TokenId, amount: u64) -> Result<(), EntryError> {
        if amount == 0 {
            return Ok(());
        }
        let balance = self.balance(account, token).checked_add(amount).ok_or(EntryError::Overflow)?;
        self.write(balance_key(account, token), &balance);
        Ok(())
    }

    pub(super) fn debit(&mut self, account: &PublicKey, token: &TokenId, amount: u64) -> Result<(), EntryError> {
        let balance = self.balance(account, token);
        let left = balance.checked_sub(amount).ok_or_else(|| EntryError::InsufficientFunds {
            account: *account,
            token: token.clone(),
            balance,
            needed: amount,
        })?;
        if left == 0 {
            self.delete(balance_key(account, token));
        } else {
            self.write(balance_key(account, token), &left);
        }
        Ok(())
    }

    pub(super) fn move_tokens(
        &mut self,
        from: &PublicKey,
        to: &PublicKey,
        token: &TokenId,
        amount: u64,
    ) -> Result<(), EntryError> {
        if self.base.genesis.token(token).is_none() {
            return Err(EntryError::UnknownToken(token.clone()));
        }
        self.debit(from, token, amount)?;
        self.credit(to, token, amount)
    }

    pub(super) fn change_supply(&mut self, token: &TokenId, add: u64, sub: u64) -> Result<(), EntryError> {
        let supply_key = key(SUPPLY, &[token.as_str().as_bytes()]);
        let supply: u64 = self.read(&supply_key).unwrap_or(0);
        let supply = supply.checked_add(add).and_then(|supply| supply.checked_sub(sub)).ok_or(EntryError::Overflow)?;
        self.write(supply_key, &supply);
        Ok(())
    }

    /// A token's issuance rule: the genesis', or the latest governance changed it to.
    pub(super) fn token_rules(&self, token: &TokenId) -> Option<crate::genesis::Token> {
        let mut rules = self.base.genesis.token(token)?.clone();
        if let Some(changed) =
            self.read::<protocol::message::IssuanceRule>(&key(ISSUANCE, &[token.as_str().as_bytes()]))
        {
            rules.issuers = changed.issuers.as_slice().iter().copied().collect();
            rules.supply_max = (changed.supply_max > 0).then_some(changed.supply_max);
            rules.export_reward_per_kwh = changed.export_reward_per_kwh;
        }
        Some(rules)
    }

    pub(super) fn mint(&mut self, to: &PublicKey, token: &TokenId, amount: u64) -> Result<(), EntryError> {
        let rules = self.token_rules(token).ok_or_else(|| EntryError::UnknownToken(token.clone()))?;
        if let Some(cap) = rules.supply_max {
            let supply: u64 = self.read(&key(SUPPLY, &[token.as_str().as_bytes()])).unwrap_or(0);
            if supply.checked_add(amount).is_none_or(|total| total > cap) {
                return Err(EntryError::SupplyCap { amount, cap });
            }
        }
        self.change_supply(token, amount, 0)?;
        self.credit(to, token, amount)
    }
}
