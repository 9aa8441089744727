//! Dispatch: a home controller that plans its battery and its flexible load over the coming intervals from a
//! forecast of PV and load and the local prices, as home energy managers (EVCC and the like) do — here with the
//! kos market's prices.
//!
//! 1. **Flexible load** (a car, a heat pump's buffer, a dishwasher): its energy is placed, in slices of at most
//!    its power, in the intervals where energy is cheapest by its marginal price — the sell price while the home
//!    has surplus PV (using it forgoes that sale), the buy price otherwise — before its deadline.
//! 2. **Battery**: dynamic programming over the state of charge, discretised into `levels` steps. With stored
//!    energy s and a move to s′ in interval t, the battery's terminals take (s′ − s)/√η when charging and give
//!    (s − s′)·√η when discharging (η the round-trip efficiency); the grid takes
//!    g = load + flexible − pv + charge − discharge, costing g·buy if g > 0 and earning −g·sell otherwise.
//!    V_t(s) = min over s′ of cost_t(s, s′) + V_{t+1}(s′), with V_T(s) = −s·√η·v where v is the mean sell price
//!    (energy left in the battery is worth what it would sell for). Moves are bounded by the battery's power.
//! 3. Only the first interval's decision is applied; the plan is made again every interval with fresh forecasts
//!    and prices (receding horizon).
//!
//! Objectives: `Cost` minimises the bill with the given prices; `SelfConsumption` minimises energy drawn from the
//! grid (buy = 1, sell = 0).

use crate::home::{BatteryCommand, BatteryConfig};

/// Forecast and prices for one interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Slot {
    /// Expected PV generation, Wh.
    pub pv_wh: f64,
    /// Expected inflexible load, Wh.
    pub load_wh: f64,
    /// Price of energy bought, per kWh (any unit; the same for every slot).
    pub buy_per_kwh: f64,
    /// Price of energy sold, per kWh.
    pub sell_per_kwh: f64,
}

/// A load that must get `energy_wh` before the end of slot `deadline` (exclusive), at most `power_w`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flexible {
    pub energy_wh: f64,
    pub power_w: f64,
    pub deadline: usize,
}

/// What the controller optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Lowest bill at the given prices.
    #[default]
    Cost,
    /// Least energy from the grid.
    SelfConsumption,
}

/// The controller's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Battery terminal power per slot, W: positive charges, negative discharges.
    pub battery_w: Vec<f64>,
    /// Flexible load per slot, Wh.
    pub flexible_wh: Vec<f64>,
    /// Stored energy at the start of each slot and after the last, Wh.
    pub stored_wh: Vec<f64>,
    /// The plan's expected cost in price units (negative is revenue), terminal value included.
    pub cost: f64,
}

impl Plan {
    /// The battery command for the first slot.
    #[must_use]
    pub fn first_command(&self) -> BatteryCommand {
        match self.battery_w.first().copied().unwrap_or(0.0) {
            w if w > 0.5 => BatteryCommand::Charge(w.round() as u64),
            w if w < -0.5 => BatteryCommand::Discharge((-w).round() as u64),
            _ => BatteryCommand::Idle,
        }
    }

    /// The battery command for the first slot as a home battery takes it: where the plan only absorbs the slot's
    /// surplus or covers its deficit, the battery is left to follow the load minute by minute (self-consumption),
    /// which a fixed power cannot; it is held idle where the plan saves its energy or room for later; it is
    /// driven at a fixed power only to charge from the grid or to discharge into it.
    #[must_use]
    pub fn first_command_for(&self, slot: &Slot, slot_s: u32) -> BatteryCommand {
        let planned_wh = self.battery_w.first().copied().unwrap_or(0.0) * f64::from(slot_s) / 3600.0;
        let surplus_wh = slot.pv_wh - slot.load_wh - self.flexible_wh.first().copied().unwrap_or(0.0);
        // A tenth of the slot's flows or 50 Wh, whichever is larger, counts as "the same".
        let tolerance = (0.1 * (slot.pv_wh + slot.load_wh)).max(50.0);
        if planned_wh.abs() < 1.0 {
            return BatteryCommand::Idle;
        }
        let follows_surplus = planned_wh > 0.0 && surplus_wh > 0.0 && planned_wh <= surplus_wh + tolerance;
        let follows_deficit = planned_wh < 0.0 && surplus_wh < 0.0 && -planned_wh <= -surplus_wh + tolerance;
        if follows_surplus || follows_deficit { BatteryCommand::SelfConsumption } else { self.first_command() }
    }

    /// The flexible load's power in the first slot, W.
    #[must_use]
    pub fn first_flexible_w(&self, slot_s: u32) -> u64 {
        let wh = self.flexible_wh.first().copied().unwrap_or(0.0);
        (wh * 3600.0 / f64::from(slot_s.max(1))).round() as u64
    }
}

/// The battery's state for planning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Battery {
    pub config: BatteryConfig,
    pub stored_wh: f64,
}

/// Most slots a plan covers (two days of quarter hours).
pub const SLOTS_MAX: usize = 192;

/// A cap on the grid connection (a governance override on the device), W each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridCap {
    pub import_w_max: u64,
    pub export_w_max: u64,
}

/// What a Wh beyond a grid cap costs the plan, in multiples of the dearest price: the battery takes or gives
/// whatever keeps the home within its cap before anything else.
const CAP_PENALTY_FACTOR: f64 = 1_000.0;

/// Plans the coming slots of `slot_s` seconds each.
#[must_use]
pub fn plan(
    slots: &[Slot],
    slot_s: u32,
    battery: Option<Battery>,
    flexible: Option<Flexible>,
    objective: Objective,
    levels: usize,
) -> Plan {
    plan_within(slots, slot_s, battery, flexible, objective, levels, None)
}

/// [`plan`] for a home whose grid connection is capped: energy beyond the cap is avoided first (charging the
/// battery from an export the cap forbids, discharging it into an import beyond it), then the bill.
#[must_use]
pub fn plan_within(
    slots: &[Slot],
    slot_s: u32,
    battery: Option<Battery>,
    flexible: Option<Flexible>,
    objective: Objective,
    levels: usize,
    cap: Option<GridCap>,
) -> Plan {
    let slots: Vec<Slot> = slots
        .iter()
        .take(SLOTS_MAX)
        .map(|slot| match objective {
            Objective::Cost => *slot,
            Objective::SelfConsumption => Slot { buy_per_kwh: 1.0, sell_per_kwh: 0.0, ..*slot },
        })
        .collect();
    let hours = f64::from(slot_s) / 3600.0;
    let flexible_wh = place_flexible(&slots, hours, flexible);
    let loads: Vec<f64> = slots.iter().zip(&flexible_wh).map(|(slot, flexible)| slot.load_wh + flexible).collect();
    let dearest = slots.iter().map(|slot| slot.buy_per_kwh.max(slot.sell_per_kwh)).fold(1.0, f64::max);
    let (import_max, export_max) = cap.map_or((f64::INFINITY, f64::INFINITY), |cap| {
        (cap.import_w_max as f64 * hours, cap.export_w_max as f64 * hours)
    });
    let grid_cost = |slot: &Slot, grid_wh: f64| {
        let beyond = (grid_wh - import_max).max(0.0) + (-grid_wh - export_max).max(0.0);
        let penalty = beyond * dearest * CAP_PENALTY_FACTOR / 1000.0;
        penalty + if grid_wh > 0.0 { grid_wh * slot.buy_per_kwh / 1000.0 } else { grid_wh * slot.sell_per_kwh / 1000.0 }
    };
    let Some(battery) = battery.filter(|battery| battery.config.capacity_wh > 0) else {
        let cost = slots.iter().zip(&loads).map(|(slot, load)| grid_cost(slot, load - slot.pv_wh)).sum();
        return Plan { battery_w: vec![0.0; slots.len()], stored_wh: vec![0.0; slots.len() + 1], flexible_wh, cost };
    };
    let levels = levels.clamp(2, 1_000);
    let capacity = battery.config.capacity_wh as f64;
    let step = capacity / (levels - 1) as f64;
    let one_way = (f64::from(battery.config.efficiency_ppm) / 1e6).sqrt();
    let power_wh = battery.config.power_w as f64 * hours;
    let mean_sell = slots.iter().map(|slot| slot.sell_per_kwh).sum::<f64>() / slots.len().max(1) as f64;
    // value[t][level]: least cost from slot t on, starting at that level; choice[t][level]: the next level.
    let mut value = vec![0.0; levels];
    for (level, value) in value.iter_mut().enumerate() {
        *value = -(level as f64 * step) * one_way * mean_sell / 1000.0;
    }
    let mut choices = vec![vec![0usize; levels]; slots.len()];
    for t in (0..slots.len()).rev() {
        let mut next_value = vec![f64::INFINITY; levels];
        for (level, best) in next_value.iter_mut().enumerate() {
            let stored = level as f64 * step;
            for (next, future) in value.iter().enumerate() {
                let moved = next as f64 * step - stored;
                let terminal = if moved >= 0.0 { moved / one_way } else { moved * one_way };
                if terminal.abs() > power_wh + 1e-9 {
                    continue;
                }
                let cost = grid_cost(&slots[t], loads[t] - slots[t].pv_wh + terminal) + future;
                if cost < *best {
                    *best = cost;
                    choices[t][level] = next;
                }
            }
        }
        value = next_value;
    }
    // Start from the level nearest the battery's charge, and follow the choices.
    let start = ((battery.stored_wh / step).round() as usize).min(levels - 1);
    let mut level = start;
    let mut battery_w = Vec::with_capacity(slots.len());
    let mut stored_wh = vec![level as f64 * step];
    for choice in &choices {
        let next = choice[level];
        let moved = (next as f64 - level as f64) * step;
        let terminal = if moved >= 0.0 { moved / one_way } else { moved * one_way };
        battery_w.push(terminal / hours);
        stored_wh.push(next as f64 * step);
        level = next;
    }
    Plan { battery_w, flexible_wh, stored_wh, cost: value[start] }
}

/// Places the flexible load in the slots of lowest marginal price before its deadline, at most its power each.
fn place_flexible(slots: &[Slot], hours: f64, flexible: Option<Flexible>) -> Vec<f64> {
    let mut placed = vec![0.0; slots.len()];
    let Some(flexible) = flexible else { return placed };
    let per_slot = flexible.power_w * hours;
    let mut order: Vec<usize> = (0..flexible.deadline.min(slots.len())).collect();
    let marginal = |slot: &Slot| if slot.pv_wh > slot.load_wh { slot.sell_per_kwh } else { slot.buy_per_kwh };
    order.sort_by(|&a, &b| marginal(&slots[a]).total_cmp(&marginal(&slots[b])).then(a.cmp(&b)));
    let mut left = flexible.energy_wh;
    for index in order {
        if left <= 0.0 {
            break;
        }
        let amount = left.min(per_slot);
        placed[index] = amount;
        left -= amount;
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn battery() -> Battery {
        Battery {
            config: BatteryConfig { capacity_wh: 10_000, power_w: 4_000, efficiency_ppm: 900_000 },
            stored_wh: 0.0,
        }
    }

    #[test]
    fn the_battery_buys_cheap_and_covers_the_expensive_evening() {
        // Four hours: cheap night, expensive evening; no PV.
        let slots = [
            Slot { pv_wh: 0.0, load_wh: 500.0, buy_per_kwh: 100.0, sell_per_kwh: 50.0 },
            Slot { pv_wh: 0.0, load_wh: 500.0, buy_per_kwh: 100.0, sell_per_kwh: 50.0 },
            Slot { pv_wh: 0.0, load_wh: 3_000.0, buy_per_kwh: 400.0, sell_per_kwh: 50.0 },
            Slot { pv_wh: 0.0, load_wh: 3_000.0, buy_per_kwh: 400.0, sell_per_kwh: 50.0 },
        ];
        let with = plan(&slots, 3600, Some(battery()), None, Objective::Cost, 101);
        let without = plan(&slots, 3600, None, None, Objective::Cost, 101);
        assert!(with.battery_w[0] > 0.0 && with.battery_w[2] < 0.0, "{with:?}");
        assert!(with.cost < without.cost - 1.0, "{} vs {}", with.cost, without.cost);
        assert!(matches!(with.first_command(), BatteryCommand::Charge(_)));
        // The battery never goes beyond its bounds or its power.
        for (t, w) in with.battery_w.iter().enumerate() {
            assert!(w.abs() <= 4_000.0 + 1e-6);
            assert!((0.0..=10_000.0 + 1e-6).contains(&with.stored_wh[t + 1]));
        }
    }

    #[test]
    fn self_consumption_stores_the_midday_surplus_for_the_evening() {
        let slots = [
            Slot { pv_wh: 4_000.0, load_wh: 500.0, buy_per_kwh: 300.0, sell_per_kwh: 80.0 },
            Slot { pv_wh: 0.0, load_wh: 2_000.0, buy_per_kwh: 300.0, sell_per_kwh: 80.0 },
        ];
        let plan = plan(&slots, 3600, Some(battery()), None, Objective::SelfConsumption, 101);
        // 3,500 Wh surplus, about 3,300 Wh comes back out after losses; the evening needs 2,000.
        assert!(plan.battery_w[0] > 2_000.0, "{plan:?}");
        assert!(plan.battery_w[1] < -1_900.0, "{plan:?}");
    }

    #[test]
    fn an_export_cap_makes_the_battery_soak_up_the_surplus_first() {
        // A sunny hour with a feed-in worth more than the battery's stored value later: unconstrained, the plan sells.
        let slots = [
            Slot { pv_wh: 4_000.0, load_wh: 500.0, buy_per_kwh: 100.0, sell_per_kwh: 90.0 },
            Slot { pv_wh: 0.0, load_wh: 100.0, buy_per_kwh: 100.0, sell_per_kwh: 10.0 },
        ];
        let free = plan(&slots, 3600, Some(battery()), None, Objective::Cost, 101);
        assert!(free.battery_w[0] < 100.0, "{free:?}");
        // Capped at 1 kW of export: 2.5 kWh of the 3.5 kWh surplus goes into the battery.
        let cap = GridCap { import_w_max: 10_000, export_w_max: 1_000 };
        let capped = plan_within(&slots, 3600, Some(battery()), None, Objective::Cost, 101, Some(cap));
        assert!(capped.battery_w[0] >= 2_500.0 - 100.0, "{capped:?}");
        let exported = 3_500.0 - capped.battery_w[0];
        assert!(exported <= 1_000.0 + 1e-6, "{capped:?}");
    }

    #[test]
    fn flexible_load_runs_in_the_sun_or_the_cheap_hours() {
        let slots = [
            Slot { pv_wh: 0.0, load_wh: 500.0, buy_per_kwh: 300.0, sell_per_kwh: 80.0 },
            Slot { pv_wh: 5_000.0, load_wh: 500.0, buy_per_kwh: 300.0, sell_per_kwh: 80.0 },
            Slot { pv_wh: 0.0, load_wh: 500.0, buy_per_kwh: 150.0, sell_per_kwh: 80.0 },
            Slot { pv_wh: 6_000.0, load_wh: 500.0, buy_per_kwh: 300.0, sell_per_kwh: 80.0 },
        ];
        let car = Flexible { energy_wh: 9_000.0, power_w: 3_700.0, deadline: 3 };
        let plan = plan(&slots, 3600, None, Some(car), Objective::Cost, 101);
        // Before the deadline: the sunny slot first, then the cheap one, then the rest.
        assert_eq!(plan.flexible_wh[1], 3_700.0);
        assert_eq!(plan.flexible_wh[2], 3_700.0);
        assert!((plan.flexible_wh[0] - 1_600.0).abs() < 1e-9);
        assert_eq!(plan.flexible_wh[3], 0.0);
    }
}
