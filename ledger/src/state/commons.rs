//! The commons: guilds and their spends, registered assets, maintenance alerts, citizens' reports, and the anchors
//! of each interval's readings.

use super::*;
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

    /// Where a meter of `author` stood at its last anchored reading.
    fn meter_state(&self, author: &PublicKey, meter: &str) -> Option<MeterState> {
        value(self, &key(METER, &[author.as_bytes(), meter.as_bytes()]))
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

/// Execution of commons entries.
impl Pending<'_> {
    /// A new guild, whose account is derived from the entry's id.
    pub(super) fn found_guild(&mut self, id: &Id, guild: &protocol::message::Guild) -> Result<(), EntryError> {
        let id = *id;
        let account = protocol::message::guild_account(&id);
        let record = GuildState {
            name: guild.name.as_str().to_string(),
            members: guild.members.as_slice().to_vec(),
            threshold: guild.threshold,
            created_by: id,
        };
        self.write(key(GUILD, &[account.as_bytes()]), &record);
        Ok(())
    }

    /// A member asks the guild to spend; the asking counts as the member's approval.
    pub(super) fn ask_guild_spend(
        &mut self,
        author: &PublicKey,
        id: &Id,
        spend: &protocol::message::GuildSpend,
    ) -> Result<(), EntryError> {
        if self.base.genesis.token(&spend.token).is_none() {
            return Err(EntryError::UnknownToken(spend.token.clone()));
        }
        let record = GuildSpendState {
            guild: spend.guild,
            to: spend.to,
            token: spend.token.clone(),
            amount: spend.amount,
            approvals: 0,
            status: SpendStatus::Pending,
        };
        self.write(key(GUILD_SPEND, &[id.as_bytes()]), &record);
        self.approve(author, id)
    }

    /// A maintenance alert on a registered asset (kept 30 days); it may post a quest.
    pub(super) fn raise_alert(
        &mut self,
        author: &PublicKey,
        id: &Id,
        alert: &protocol::message::Alert,
    ) -> Result<(), EntryError> {
        let (author, id) = (*author, *id);
        if self.get(&key(ASSET, &[alert.asset.as_bytes()])).is_none() {
            return Err(EntryError::UnknownAsset(alert.asset));
        }
        let alert_key = key(ALERT, &[alert.asset.as_bytes(), &self.context.height.to_be_bytes(), id.as_bytes()]);
        let record = AlertState { id, author, alert: alert.clone(), height: self.context.height };
        self.write(alert_key.clone(), &record);
        self.forget_at(self.context.time_ms.saturating_add(NOTICE_RETENTION_MS), &alert_key);
        self.events.push(Event::AlertRaised { alert: id, asset: alert.asset, rule: alert.rule });
        self.maintenance_quest(&id, alert);
        Ok(())
    }

    /// A citizen's report (kept 30 days).
    pub(super) fn report(
        &mut self,
        author: &PublicKey,
        id: &Id,
        report: &protocol::message::Report,
    ) -> Result<(), EntryError> {
        let (author, id) = (*author, *id);
        if let Some(asset) = report.asset.as_slice().first()
            && self.get(&key(ASSET, &[asset.as_bytes()])).is_none()
        {
            return Err(EntryError::UnknownAsset(*asset));
        }
        let report_key = key(REPORT, &[id.as_bytes()]);
        let record =
            ReportState { author, report: report.clone(), height: self.context.height, time_ms: self.context.time_ms };
        self.write(report_key.clone(), &record);
        self.forget_at(self.context.time_ms.saturating_add(NOTICE_RETENTION_MS), &report_key);
        self.events.push(Event::Reported { report: id, severity: report.severity });
        Ok(())
    }

    /// An asset's manifest, and the index of its meters.
    pub(super) fn register_asset(
        &mut self,
        author: &PublicKey,
        id: &Id,
        asset: &protocol::message::Asset,
    ) -> Result<(), EntryError> {
        let (author, id) = (*author, *id);
        if asset.kind == protocol::message::AssetKind::Feeder {
            self.check_feeder(&author, asset)?;
            self.write(key(FEEDER, &[asset.cell.as_str().as_bytes()]), &id);
        }
        // A device key belongs to one account's asset: another account may not claim a device's readings.
        if let Some(device) = asset.device.as_slice().first() {
            let device_key = key(DEVICE_KEY, &[&device.index_bytes()]);
            if let Some(holder) = self.read::<Id>(&device_key)
                && let Some(held) = self.read::<AssetState>(&key(ASSET, &[holder.as_bytes()]))
                && held.author != author
            {
                return Err(EntryError::DeviceKeyTaken { key: device.to_string(), asset: holder });
            }
            self.write(device_key, &id);
        }
        let record = AssetState { author, manifest: asset.clone(), readings: 0, last_interval_start_s: 0 };
        self.write(key(ASSET, &[id.as_bytes()]), &record);
        for meter in asset.meters.as_slice() {
            self.write(key(ASSET_BY_METER, &[author.as_bytes(), meter.as_str().as_bytes()]), &id);
        }
        Ok(())
    }

    /// Counts a member's approval of a pending spend; the approval that reaches the guild's threshold moves the
    /// tokens (and fails, leaving the spend pending, when the guild's balance does not cover them).
    pub(super) fn approve(&mut self, member: &PublicKey, spend_id: &Id) -> Result<(), EntryError> {
        let spend_key = key(GUILD_SPEND, &[spend_id.as_bytes()]);
        let mut spend: GuildSpendState = self
            .read(&spend_key)
            .filter(|spend: &GuildSpendState| spend.status == SpendStatus::Pending)
            .ok_or(EntryError::SpendClosed(*spend_id))?;
        let guild: GuildState =
            self.read(&key(GUILD, &[spend.guild.as_bytes()])).ok_or(EntryError::NotAGuild(spend.guild))?;
        if !guild.members.contains(member) {
            return Err(EntryError::NotAGuildMember(*member));
        }
        let approval_key = key(GUILD_APPROVAL, &[spend_id.as_bytes(), member.as_bytes()]);
        if self.get(&approval_key).is_some() {
            return Err(EntryError::AlreadyApproved(*member));
        }
        self.write(approval_key, &1u8);
        spend.approvals = spend.approvals.saturating_add(1);
        if spend.approvals >= guild.threshold {
            self.move_tokens(&spend.guild, &spend.to, &spend.token, spend.amount)?;
            spend.status = SpendStatus::Done;
            self.events.push(Event::GuildSpent {
                spend: *spend_id,
                guild: spend.guild,
                to: spend.to,
                token: spend.token.clone(),
                amount: spend.amount,
            });
        }
        self.write(spend_key, &spend);
        Ok(())
    }
}
