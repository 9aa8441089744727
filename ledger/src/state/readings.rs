//! Readings: anchoring a meter's signed reading on the ledger, checked against the meter's previous one and its
//! asset's limits.

use super::*;

/// Execution of readings entries.
impl Pending<'_> {
    pub(super) fn anchor_reading(
        &mut self,
        author: &PublicKey,
        id: &Id,
        reading: &protocol::message::Reading,
    ) -> Result<(), EntryError> {
        let meter_key = key(METER, &[author.as_bytes(), reading.meter.as_str().as_bytes()]);
        // The previous reading's interval is taken to be this one's (a meter keeps its interval length).
        let previous = self.read::<MeterState>(&meter_key).map(|last| energy::reading::Previous {
            interval_start_s: last.interval_start_s,
            interval_s: reading.interval_s,
            import_counter_wh: last.import_counter_wh,
            export_counter_wh: last.export_counter_wh,
        });
        let now_s = self.context.time_ms / 1000;
        // A meter bound to a registered asset is held to the asset's rated limits; others to a household's.
        let asset_id = self.read::<Id>(&key(ASSET_BY_METER, &[author.as_bytes(), reading.meter.as_str().as_bytes()]));
        let asset_key = asset_id.map(|asset| key(ASSET, &[asset.as_bytes()]));
        let mut asset = asset_key.as_ref().and_then(|asset_key| self.read::<AssetState>(asset_key));
        // The device the asset names signs its readings (the signature itself was checked at the door).
        let named = asset.as_ref().and_then(|asset| asset.manifest.device.as_slice().first());
        let refuse = |reason: String| EntryError::ReadingDevice { meter: reading.meter.as_str().to_owned(), reason };
        protocol::message::check_binding(named, reading).map_err(|error| refuse(error.to_string()))?;
        // A device key counts for the asset that holds it (`5`) only: an older manifest naming it counts no more.
        if let Some(named) = named {
            let holder = self.read::<Id>(&key(DEVICE_KEY, &[&named.index_bytes()]));
            if holder != asset_id {
                return Err(refuse(format!("device key {named} now belongs to another asset")));
            }
        }
        let mut capacity = asset.as_ref().map_or(energy::reading::Capacity::RESIDENTIAL, AssetState::capacity);
        // An override may cap the device's import and export below what it is rated for.
        if let Some(cap) =
            self.read::<InForce>(&key(DEVICE_CAP, &[author.as_bytes(), reading.meter.as_str().as_bytes()]))
        {
            capacity.import_w_max = capacity.import_w_max.min(cap.first);
            capacity.export_w_max = capacity.export_w_max.min(cap.second);
        }
        match energy::reading::check(reading, previous.as_ref(), &capacity, now_s) {
            Ok(()) => {}
            Err(energy::reading::Invalid::NotAfterPrevious | energy::reading::Invalid::Register { .. }) => {
                return Err(EntryError::ReadingOutOfOrder { meter: reading.meter.as_str().to_owned() });
            }
            Err(invalid) => {
                return Err(EntryError::ReadingImplausible {
                    meter: reading.meter.as_str().to_owned(),
                    reason: invalid.to_string(),
                });
            }
        }
        self.write(
            meter_key,
            &MeterState {
                interval_start_s: reading.interval_start_s,
                import_counter_wh: reading.import_counter_wh,
                export_counter_wh: reading.export_counter_wh,
                reading: *id,
            },
        );
        if let (Some(asset_key), Some(asset)) = (asset_key, asset.as_mut()) {
            asset.readings = asset.readings.saturating_add(1);
            asset.last_interval_start_s = reading.interval_start_s;
            self.write(asset_key, asset);
        }
        let anchor_key = key(ANCHOR, &[&reading.interval_start_s.to_be_bytes()]);
        let previous: Hash = self.read(&anchor_key).unwrap_or(Hash::ZERO);
        self.write(anchor_key, &hash::tagged("kos/v1/anchor", &[previous.as_bytes(), id.as_bytes()]));
        self.reputation(author, |reputation| reputation.readings += 1);
        // A feeder measures its cell, not its author's flows: its reading counts in the cell's balance only (while
        // the cell is its), in no account's flows, trades or rewards.
        let cell = asset.as_ref().map(|asset| asset.manifest.cell.clone()).filter(|cell| !cell.as_str().is_empty());
        if let (Some(asset_id), Some(asset)) = (asset_id, asset.as_ref())
            && asset.manifest.kind == protocol::message::AssetKind::Feeder
        {
            if let Some(cell) = cell
                && self.read::<Id>(&key(FEEDER, &[cell.as_str().as_bytes()])) == Some(asset_id)
            {
                self.feeder_reading(&asset_id, &cell, reading)?;
            }
            return Ok(());
        }
        // The account's energy flows per interval start, summed over its meters and kept per trust level: what
        // trades are checked against.
        let trust = protocol::message::Trust::of(reading);
        let end_ms = reading.interval_start_s.saturating_add(u64::from(reading.interval_s)).saturating_mul(1000);
        let flows = [reading.import_wh, reading.export_wh];
        self.add_flows(author, reading.interval_start_s, end_ms, flows, 0..=trust.level());
        self.check_energy_job(author, reading.meter.as_str(), reading.export_counter_wh)?;
        // Issuance rules: mission tokens rewarded per kWh exported, as far as their cap allows, for readings of
        // `reward_trust_min` or more; a member of a cell is rewarded when the cell's interval closes (PROTOCOL.md §10,
        // *cells*: its feeder may raise the reading's level), and not at all once it closed.
        match (asset_id, cell) {
            (Some(asset_id), Some(cell)) => self.member_reading(author, &asset_id, &cell, reading),
            _ if self.rewarded(trust) => self.reward_export(author, reading.export_wh),
            _ => Ok(()),
        }
    }
}
