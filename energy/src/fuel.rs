//! Agent fuel: every agent (peer identity) has a fuel budget per resource class, spends it on what it asks of the
//! network and the node, and gets it back over idle time, by completed deliveries ("quests") and by energy it
//! contributes to the grid. An agent out of fuel is throttled; it can never exhaust a node, because each budget
//! is bounded and the table of agents is bounded.
//!
//! Sans-IO: every call takes `now_ms`; nothing here reads a clock.
//!
//! - Fuel is counted in milli-units. An action of `units` at priority p costs `units × cost(p)` milli-units,
//!   with cost(background) = 500, cost(normal) = 1000, cost(real-time) = 4000: background work is cheapest.
//! - A budget refills at `recharge_per_s` units per second of elapsed time, up to its `capacity` (scaled by the
//!   agent's standing): level(t) = min(capacity, level(t₀) + (t − t₀) · recharge).
//! - A completed quest adds `quest_units`, and each kWh exported adds `eco_units_per_kwh`, to every class, never
//!   above capacity.
//! - A new agent starts with a quarter of its capacity, so an agent that is forgotten and comes back (or a fresh
//!   identity) has less than one that kept its budget.

use std::collections::HashMap;
use std::hash::Hash;

/// What fuel pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// Work the node does for the agent: validating its entries, matching its offers, running its jobs.
    Compute = 0,
    /// Messages and bytes the node receives from or forwards for the agent.
    Bandwidth = 1,
    /// State the node keeps for the agent: open offers, barter offers, jobs.
    Memory = 2,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Compute, Class::Bandwidth, Class::Memory];
}

/// How urgently an action is wanted; urgent actions cost more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Priority {
    Background,
    Normal,
    RealTime,
}

impl Priority {
    /// Milli-units of fuel per unit of work.
    #[must_use]
    pub const fn cost_milli(self) -> u64 {
        match self {
            Priority::Background => 500,
            Priority::Normal => 1_000,
            Priority::RealTime => 4_000,
        }
    }
}

/// How much the network trusts an agent; it scales the agent's capacity and recharge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    /// Unknown to the ledger, or with little history.
    Newcomer,
    /// Has an account with settled deliveries.
    Member,
    /// A validator, or an account of the ledger's "trusted" reputation tier.
    Trusted,
}

impl Standing {
    /// How many times a newcomer's capacity and recharge the agent gets.
    #[must_use]
    pub const fn multiplier(self) -> u64 {
        match self {
            Standing::Newcomer => 1,
            Standing::Member => 2,
            Standing::Trusted => 4,
        }
    }
}

/// One class's budget for a newcomer, in fuel units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Most fuel the agent can hold.
    pub capacity: u64,
    /// Fuel regained per second.
    pub recharge_per_s: u64,
}

/// The fuel model's settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub compute: Budget,
    /// One bandwidth unit is one message of up to 1 KiB (each further KiB costs one more).
    pub bandwidth: Budget,
    pub memory: Budget,
    /// Fuel added to every class for a completed delivery.
    pub quest_units: u64,
    /// Fuel added to every class per kWh the agent exported (or saved) for the grid.
    pub eco_units_per_kwh: u64,
    /// Most agents tracked; beyond it the one idle longest is forgotten.
    pub agents_max: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            // One unit per signature a node verifies for the agent: as many as bandwidth units, so that a message
            // with nested offers (a settlement, a barter cycle) is what runs out first.
            compute: Budget { capacity: 1_000, recharge_per_s: 200 },
            // 200 messages/s with a burst of 1,000, as the network's default per-peer limit.
            bandwidth: Budget { capacity: 1_000, recharge_per_s: 200 },
            memory: Budget { capacity: 500, recharge_per_s: 5 },
            quest_units: 100,
            eco_units_per_kwh: 50,
            agents_max: 10_000,
        }
    }
}

impl Config {
    #[must_use]
    pub fn budget(&self, class: Class) -> Budget {
        match class {
            Class::Compute => self.compute,
            Class::Bandwidth => self.bandwidth,
            Class::Memory => self.memory,
        }
    }

    /// A class's budget for an agent of `standing`.
    #[must_use]
    pub fn budget_for(&self, class: Class, standing: Standing) -> Budget {
        let budget = self.budget(class);
        Budget {
            capacity: budget.capacity.saturating_mul(standing.multiplier()),
            recharge_per_s: budget.recharge_per_s.saturating_mul(standing.multiplier()),
        }
    }
}

/// The answer to a request to spend fuel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Spent: go ahead.
    Allowed,
    /// Not enough fuel: refuse the action (nothing was spent). Enough will have recharged after `retry_after_ms`,
    /// or never if the action costs more than the capacity (`u64::MAX`).
    Throttled { retry_after_ms: u64 },
}

#[derive(Debug, Clone)]
struct Agent {
    standing: Standing,
    /// A cap on recharge (and capacity), units per second, set by a governance override.
    cap_per_s: Option<u64>,
    /// Fuel per class, milli-units, as of `updated_ms`.
    levels_milli: [u64; 3],
    updated_ms: u64,
    throttled: u64,
}

/// One agent's fuel, as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub standing: Standing,
    /// Fuel per class (compute, bandwidth, memory), whole units.
    pub levels: [u64; 3],
    /// How many actions were refused.
    pub throttled: u64,
}

/// Every agent's fuel.
#[derive(Debug, Clone)]
pub struct Fuel<K> {
    config: Config,
    agents: HashMap<K, Agent>,
    /// Agents whose fuel an override caps, units per second (kept apart so a forgotten agent stays capped).
    caps: HashMap<K, u64>,
    throttled_total: u64,
}

impl<K: Hash + Eq + Clone> Fuel<K> {
    #[must_use]
    pub fn new(config: Config) -> Fuel<K> {
        Fuel { config, agents: HashMap::new(), caps: HashMap::new(), throttled_total: 0 }
    }

    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How many actions were refused since start, over all agents.
    #[must_use]
    pub fn throttled_total(&self) -> u64 {
        self.throttled_total
    }

    /// Agents tracked now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// The agent's standing (newcomer if unknown).
    #[must_use]
    pub fn standing(&self, agent: &K) -> Standing {
        self.agents.get(agent).map_or(Standing::Newcomer, |agent| agent.standing)
    }

    /// An agent's fuel at `now_ms`, or `None` if it is not tracked.
    #[must_use]
    pub fn status(&self, agent: &K, now_ms: u64) -> Option<Status> {
        let mut state = self.agents.get(agent)?.clone();
        recharge(&self.config, &mut state, now_ms);
        Some(Status {
            standing: state.standing,
            levels: state.levels_milli.map(|milli| milli / 1000),
            throttled: state.throttled,
        })
    }

    fn capacity_milli(&self, class: Class, standing: Standing, cap: Option<u64>) -> u64 {
        capped(self.config.budget_for(class, standing), cap).capacity.saturating_mul(1000)
    }

    /// Replaces the fuel caps overrides put on agents (units per second in every class; the capacity becomes a
    /// second of it): a capped agent's fuel is cut to the cap at once and recharges no faster.
    pub fn set_caps(&mut self, caps: impl IntoIterator<Item = (K, u64)>, now_ms: u64) {
        let caps: HashMap<K, u64> = caps.into_iter().collect();
        for (key, state) in &mut self.agents {
            recharge(&self.config, state, now_ms);
            state.cap_per_s = caps.get(key).copied();
            for class in Class::ALL {
                let capacity = capped(self.config.budget_for(class, state.standing), state.cap_per_s).capacity;
                let level = &mut state.levels_milli[class as usize];
                *level = (*level).min(capacity.saturating_mul(1000));
            }
        }
        self.caps = caps;
    }

    /// The cap on an agent, if an override put one.
    #[must_use]
    pub fn cap(&self, agent: &K) -> Option<u64> {
        self.caps.get(agent).copied()
    }

    /// The agent's entry, recharged to `now_ms`; a new agent gets a quarter of its capacity, and if the table is
    /// full the agent idle longest is forgotten.
    fn agent(&mut self, agent: &K, now_ms: u64) -> &mut Agent {
        if !self.agents.contains_key(agent)
            && self.agents.len() >= self.config.agents_max.max(1)
            && let Some(idle) = self.agents.iter().min_by_key(|(_, state)| state.updated_ms).map(|(k, _)| k.clone())
        {
            self.agents.remove(&idle);
        }
        let config = &self.config;
        let cap_per_s = self.caps.get(agent).copied();
        let state = self.agents.entry(agent.clone()).or_insert_with(|| Agent {
            standing: Standing::Newcomer,
            cap_per_s,
            levels_milli: Class::ALL
                .map(|class| capped(config.budget(class), cap_per_s).capacity.saturating_mul(1000) / 4),
            updated_ms: now_ms,
            throttled: 0,
        });
        recharge(config, state, now_ms);
        state
    }

    /// Sets the agent's standing (from the ledger's reputation or the validator set).
    pub fn set_standing(&mut self, agent: &K, standing: Standing, now_ms: u64) {
        let cap = self.cap(agent);
        let capacities = Class::ALL.map(|class| self.capacity_milli(class, standing, cap));
        let state = self.agent(agent, now_ms);
        state.standing = standing;
        for (level, capacity) in state.levels_milli.iter_mut().zip(capacities) {
            *level = (*level).min(capacity);
        }
    }

    /// Spends `units` of `class` at `priority`, or refuses without spending anything.
    pub fn spend(&mut self, agent: &K, class: Class, priority: Priority, units: u64, now_ms: u64) -> Verdict {
        let cost = units.saturating_mul(priority.cost_milli());
        let state = self.agent(agent, now_ms);
        let standing = state.standing;
        let cap = state.cap_per_s;
        let level = state.levels_milli[class as usize];
        if let Some(left) = level.checked_sub(cost) {
            state.levels_milli[class as usize] = left;
            return Verdict::Allowed;
        }
        state.throttled = state.throttled.saturating_add(1);
        self.throttled_total = self.throttled_total.saturating_add(1);
        let budget = capped(self.config.budget_for(class, standing), cap);
        let retry_after_ms = if cost > budget.capacity.saturating_mul(1000) || budget.recharge_per_s == 0 {
            u64::MAX
        } else {
            (cost - level).div_ceil(budget.recharge_per_s)
        };
        Verdict::Throttled { retry_after_ms }
    }

    /// Credits `units` to every class of the agent, up to capacity.
    fn credit(&mut self, agent: &K, units: u64, now_ms: u64) {
        let capacities = {
            let standing = self.standing(agent);
            let cap = self.cap(agent);
            Class::ALL.map(|class| self.capacity_milli(class, standing, cap))
        };
        let state = self.agent(agent, now_ms);
        for (level, capacity) in state.levels_milli.iter_mut().zip(capacities) {
            *level = level.saturating_add(units.saturating_mul(1000)).min(capacity);
        }
    }

    /// The agent's offer made a match the ledger refused (its author could not pay, was frozen or below the
    /// pool's tier when it came to settle): its memory fuel, what offers spend, is gone; it regains it as any agent.
    pub fn fault(&mut self, agent: &K, now_ms: u64) {
        let state = self.agent(agent, now_ms);
        state.levels_milli[Class::Memory as usize] = 0;
    }

    /// The agent completed a delivery (a settled trade that its meter confirmed, a finished job).
    pub fn quest_completed(&mut self, agent: &K, now_ms: u64) {
        self.credit(agent, self.config.quest_units, now_ms);
    }

    /// The agent exported (or saved) `wh` for the grid.
    pub fn energy_contributed(&mut self, agent: &K, wh: u64, now_ms: u64) {
        let units = wh.saturating_mul(self.config.eco_units_per_kwh) / 1000;
        self.credit(agent, units, now_ms);
    }

    /// What the network layer lets this agent send per second: (messages per second, burst) and
    /// (bytes per second, burst), from its bandwidth budget (a unit is one message or one KiB).
    #[must_use]
    pub fn network_limits(&self, agent: &K) -> ((u64, u64), (u64, u64)) {
        let budget = capped(self.config.budget_for(Class::Bandwidth, self.standing(agent)), self.cap(agent));
        // Bytes: one KiB per unit, with the burst 4 MiB per newcomer at least so that one block proposal fits.
        let bytes_per_s = budget.recharge_per_s.saturating_mul(5 * 1024);
        let bytes_burst = budget.capacity.saturating_mul(4 * 1024).max(4 * 1024 * 1024);
        ((budget.recharge_per_s, budget.capacity), (bytes_per_s, bytes_burst))
    }
}

/// A budget under a cap of `per_s` units per second: no faster recharge, and a second of it as capacity (at
/// least one unit).
fn capped(budget: Budget, cap: Option<u64>) -> Budget {
    match cap {
        None => budget,
        Some(per_s) => {
            Budget { capacity: budget.capacity.min(per_s.max(1)), recharge_per_s: budget.recharge_per_s.min(per_s) }
        }
    }
}

/// Refills an agent's budgets for the time since it was last updated.
fn recharge(config: &Config, agent: &mut Agent, now_ms: u64) {
    let elapsed_ms = now_ms.saturating_sub(agent.updated_ms);
    for class in Class::ALL {
        let budget = capped(config.budget_for(class, agent.standing), agent.cap_per_s);
        // recharge_per_s units per second is recharge_per_s milli-units per millisecond.
        let added = elapsed_ms.saturating_mul(budget.recharge_per_s);
        let level = &mut agent.levels_milli[class as usize];
        *level = level.saturating_add(added).min(budget.capacity.saturating_mul(1000));
    }
    agent.updated_ms = agent.updated_ms.max(now_ms);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_override_caps_an_agents_fuel_and_lifting_it_restores_the_budget() {
        let mut fuel = Fuel::new(Config::default());
        assert_eq!(fuel.spend(&1, Class::Compute, Priority::Normal, 100, 0), Verdict::Allowed);
        // Capped at 2 units a second: the level is cut to 2 units and recharges at 2 a second, even after idling.
        fuel.set_caps([(1, 2)], 0);
        assert_eq!(fuel.status(&1, 60_000).map(|status| status.levels[Class::Compute as usize]), Some(2));
        assert_eq!(fuel.spend(&1, Class::Compute, Priority::Normal, 2, 60_000), Verdict::Allowed);
        assert_eq!(
            fuel.spend(&1, Class::Compute, Priority::Normal, 1, 60_000),
            Verdict::Throttled { retry_after_ms: 500 }
        );
        // A newcomer that arrives capped starts within the cap; another agent is not touched.
        fuel.set_caps([(1, 2), (2, 1)], 60_000);
        assert_eq!(fuel.status(&1, 60_000).map(|status| status.levels[0]), Some(0));
        assert_eq!(
            fuel.spend(&2, Class::Compute, Priority::Normal, 2, 60_000),
            Verdict::Throttled { retry_after_ms: u64::MAX }
        );
        assert_eq!(fuel.spend(&3, Class::Compute, Priority::Normal, 200, 60_000), Verdict::Allowed);
        // The override expires: the full budget recharges again.
        fuel.set_caps([], 60_000);
        assert_eq!(fuel.cap(&1), None);
        assert_eq!(fuel.status(&1, 120_000).map(|status| status.levels[Class::Compute as usize]), Some(1_000));
    }

    /// An author at fault for a match the ledger refused loses its memory fuel (what offers spend), not the rest,
    /// and regains it as any agent does.
    #[test]
    fn a_fault_spends_the_memory_fuel_of_offers() {
        let mut fuel = Fuel::new(Config::default());
        assert_eq!(fuel.spend(&3, Class::Memory, Priority::Normal, 4, 0), Verdict::Allowed);
        fuel.fault(&3, 0);
        assert_eq!(fuel.status(&3, 0).map(|status| status.levels), Some([250, 250, 0]));
        assert!(matches!(fuel.spend(&3, Class::Memory, Priority::Normal, 1, 0), Verdict::Throttled { .. }));
        // 5 units a second: an offer (4 units at its priority) again after a second.
        assert_eq!(fuel.spend(&3, Class::Memory, Priority::Normal, 4, 1_000), Verdict::Allowed);
    }

    #[test]
    fn spending_throttles_and_idle_time_recharges() {
        let mut fuel = Fuel::new(Config::default());
        // A new agent starts with 250 compute units.
        for _ in 0..250 {
            assert_eq!(fuel.spend(&1, Class::Compute, Priority::Normal, 1, 0), Verdict::Allowed);
        }
        let Verdict::Throttled { retry_after_ms } = fuel.spend(&1, Class::Compute, Priority::Normal, 1, 0) else {
            panic!("out of fuel")
        };
        // 200 units/s: one unit after 5 ms.
        assert_eq!(retry_after_ms, 5);
        assert_eq!(fuel.spend(&1, Class::Compute, Priority::Normal, 1, 5), Verdict::Allowed);
        // Background work costs half: 2.5 ms of recharge pays for one unit; real-time work four times as much.
        assert_eq!(fuel.spend(&1, Class::Compute, Priority::Background, 1, 8), Verdict::Allowed);
        assert!(matches!(fuel.spend(&1, Class::Compute, Priority::RealTime, 1, 8), Verdict::Throttled { .. }));
        // Other classes and agents are untouched.
        assert_eq!(fuel.spend(&1, Class::Memory, Priority::Normal, 1, 30), Verdict::Allowed);
        assert_eq!(fuel.spend(&2, Class::Compute, Priority::Normal, 1, 30), Verdict::Allowed);
        // More than the capacity is never possible.
        assert!(matches!(
            fuel.spend(&1, Class::Compute, Priority::Normal, 5_000, 1_000_000),
            Verdict::Throttled { retry_after_ms: u64::MAX }
        ));
        assert_eq!(fuel.status(&1, 1_000_000).map(|status| status.levels[0]), Some(1_000));
        assert_eq!(fuel.throttled_total(), 3);
    }

    #[test]
    fn quests_and_exported_energy_recharge_and_standing_scales() {
        let mut fuel = Fuel::new(Config::default());
        assert_eq!(fuel.spend(&7, Class::Memory, Priority::Normal, 125, 0), Verdict::Allowed);
        assert_eq!(fuel.status(&7, 0).map(|status| status.levels[2]), Some(0));
        fuel.quest_completed(&7, 0);
        assert_eq!(fuel.status(&7, 0).map(|status| status.levels[2]), Some(100));
        // 2 kWh exported at 50 units/kWh.
        fuel.energy_contributed(&7, 2_000, 0);
        assert_eq!(fuel.status(&7, 0).map(|status| status.levels[2]), Some(200));
        // Never above capacity (500 for a newcomer, 2,000 when trusted).
        fuel.energy_contributed(&7, 1_000_000, 0);
        assert_eq!(fuel.status(&7, 0).map(|status| status.levels[2]), Some(500));
        fuel.set_standing(&7, Standing::Trusted, 0);
        fuel.energy_contributed(&7, 1_000_000, 0);
        assert_eq!(fuel.status(&7, 0).map(|status| status.levels[2]), Some(2_000));
        assert_eq!(fuel.network_limits(&7).0, (800, 4_000));
        assert_eq!(fuel.network_limits(&8).0, (200, 1_000));
    }

    #[test]
    fn the_agent_table_is_bounded() {
        let mut fuel = Fuel::new(Config { agents_max: 100, ..Config::default() });
        for agent in 0..10_000u32 {
            let _ = fuel.spend(&agent, Class::Bandwidth, Priority::Normal, 1, u64::from(agent));
        }
        assert_eq!(fuel.len(), 100);
        // The most recent agents are kept.
        assert!(fuel.status(&9_999, 10_000).is_some());
        assert!(fuel.status(&0, 10_000).is_none());
    }

    #[derive(Debug, Clone)]
    enum Action {
        Spend(u8, u8, u8, u16),
        Quest(u8),
        Energy(u8, u32),
        Standing(u8, u8),
        Wait(u32),
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            (0..4u8, 0..3u8, 0..3u8, 0..2_000u16).prop_map(|(a, c, p, u)| Action::Spend(a, c, p, u)),
            (0..4u8).prop_map(Action::Quest),
            (0..4u8, any::<u32>()).prop_map(|(a, wh)| Action::Energy(a, wh)),
            (0..4u8, 0..3u8).prop_map(|(a, s)| Action::Standing(a, s)),
            (0..100_000u32).prop_map(Action::Wait),
        ]
    }

    proptest! {
        /// Levels stay within [0, capacity]; an allowed spend takes exactly its cost; a refused one takes nothing;
        /// recharge over time never exceeds the rate.
        #[test]
        fn fuel_is_never_negative_and_recharge_is_bounded(actions in proptest::collection::vec(action(), 1..200)) {
            let config = Config::default();
            let mut fuel = Fuel::new(config.clone());
            let mut now = 0u64;
            let standings = [Standing::Newcomer, Standing::Member, Standing::Trusted];
            let priorities = [Priority::Background, Priority::Normal, Priority::RealTime];
            for action in actions {
                match action {
                    Action::Spend(agent, class, priority, units) => {
                        let class = Class::ALL[usize::from(class)];
                        let priority = priorities[usize::from(priority)];
                        let before = fuel.status(&agent, now).map_or(config.budget(class).capacity * 250, |s| {
                            s.levels[class as usize] * 1000
                        });
                        let verdict = fuel.spend(&agent, class, priority, u64::from(units), now);
                        let after = fuel.agents[&agent].levels_milli[class as usize];
                        match verdict {
                            Verdict::Allowed => prop_assert!(after + u64::from(units) * priority.cost_milli() <= before + 1000),
                            Verdict::Throttled { .. } => prop_assert!(after + 1000 > before),
                        }
                    }
                    Action::Quest(agent) => fuel.quest_completed(&agent, now),
                    Action::Energy(agent, wh) => fuel.energy_contributed(&agent, u64::from(wh), now),
                    Action::Standing(agent, standing) => fuel.set_standing(&agent, standings[usize::from(standing)], now),
                    Action::Wait(ms) => {
                        let before: Vec<_> = (0..4u8).map(|agent| fuel.status(&agent, now)).collect();
                        now += u64::from(ms);
                        for agent in 0..4u8 {
                            if let (Some(before), Some(after)) = (before[usize::from(agent)], fuel.status(&agent, now)) {
                                for class in Class::ALL {
                                    let budget = config.budget_for(class, after.standing);
                                    let gained = after.levels[class as usize] - before.levels[class as usize];
                                    prop_assert!(gained <= budget.recharge_per_s * u64::from(ms) / 1000 + 1);
                                }
                            }
                        }
                    }
                }
                for (agent, state) in &fuel.agents {
                    for class in Class::ALL {
                        let capacity = config.budget_for(class, state.standing).capacity * 1000;
                        prop_assert!(state.levels_milli[class as usize] <= capacity, "agent {agent} over capacity");
                    }
                }
            }
        }
    }
}
