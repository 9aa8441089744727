//! The commons: guilds and their spends, registered assets, maintenance alerts, citizens' reports, and the anchors
//! of each interval's readings.

use protocol::{Id, PublicKey};

use super::read::{Kv, prefixed, value};
use super::{
    ALERT, ANCHOR, ASSET, ASSET_BY_METER, AlertState, AssetState, GUILD, GUILD_SPEND, GuildSpendState, GuildState,
    REPORT, ReportState, key,
};
use crate::hash::Hash;

/// Reads of the commons (see [`Kv`]).
pub trait CommonsReads: Kv {
    /// The guild whose account is `account`.
    fn guild(&self, account: &PublicKey) -> Option<GuildState> {
        value(self, &key(GUILD, &[account.as_bytes()]))
    }

    /// A guild spend by the id of the entry that asked for it.
    fn guild_spend(&self, spend: &Id) -> Option<GuildSpendState> {
        value(self, &key(GUILD_SPEND, &[spend.as_bytes()]))
    }

    /// A registered asset by id (the id of its first manifest).
    fn asset(&self, id: &Id) -> Option<AssetState> {
        value(self, &key(ASSET, &[id.as_bytes()]))
    }

    /// The asset a meter of `author` belongs to.
    fn asset_of_meter(&self, author: &PublicKey, meter: &str) -> Option<Id> {
        value(self, &key(ASSET_BY_METER, &[author.as_bytes(), meter.as_bytes()]))
    }

    /// An asset's alerts (of the last 30 days), oldest first.
    fn alerts_of(&self, asset: &Id) -> Vec<AlertState> {
        prefixed(self, &key(ALERT, &[asset.as_bytes()])).filter_map(|(_, value)| super::decode(&value)).collect()
    }

    /// Every alert of the last 30 days, by asset.
    fn alerts(&self) -> impl Iterator<Item = AlertState> + '_ {
        prefixed(self, &[ALERT]).filter_map(|(_, value)| super::decode(&value))
    }

    /// A report (of the last 30 days) by its id.
    fn report(&self, id: &Id) -> Option<ReportState> {
        value(self, &key(REPORT, &[id.as_bytes()]))
    }

    /// Every report of the last 30 days, by id.
    fn reports(&self) -> impl Iterator<Item = (Id, ReportState)> + '_ {
        prefixed(self, &[REPORT])
            .filter_map(|(key, value)| Some((Id(key.get(1..33)?.try_into().ok()?), super::decode(&value)?)))
    }

    /// The anchor of an interval's readings: `blake3("kos/v1/anchor" || 0 || previous || reading id)` chained in
    /// ledger order, starting from 32 zero bytes.
    fn anchor(&self, interval_start_s: u64) -> Option<Hash> {
        value(self, &key(ANCHOR, &[&interval_start_s.to_be_bytes()]))
    }
}

impl<K: Kv + ?Sized> CommonsReads for K {}
