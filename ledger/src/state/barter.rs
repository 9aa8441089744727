//! Barter escrow (PROTOCOL.md §10, *barter escrow*): a barter cycle locks collateral for what each leg gives, in
//! the fee token, on an escrow account of the leg. An energy leg is checked against the giver's anchored readings
//! for its delivery interval, as an energy trade is, and pays its shortfall's penalty from the collateral to the
//! receiver. A compute, memory or bandwidth leg is released by the receiver's signed receipt (a `Done` verdict
//! naming the leg), or disputed by either party before its receipt window ends and decided by a jury drawn as for
//! jobs; a leg with neither by then returns its collateral and counts nothing. Reputation (`barters`, deliveries)
//! counts a leg only when it is released as delivered.
//! Legs due (the end of an energy leg's interval and grace, of a receipt window, of a jury) are end-of-block work,
//! at most [`BARTER_LEGS_DUE_PER_BLOCK`] a block (the rest the next block).

use super::*;
use protocol::message::{BARTER_ENERGY_INTERVAL_S, BarterCycle, BarterOffer, Outcome, Resource, barter_leg_id};

use super::jobs::JobError;
use super::read::{Kv, value};

/// Most due barter legs an end of block settles (the rest wait for the next block).
pub const BARTER_LEGS_DUE_PER_BLOCK: usize = 64;

/// Where a barter leg stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde_repr::Serialize_repr, serde_repr::Deserialize_repr)]
#[repr(u8)]
pub enum LegStatus {
    /// Awaiting its readings (energy), its receipt or a dispute (the others).
    Pending = 0,
    /// A jury decides it.
    Disputed = 1,
    /// Delivered: the collateral went back to the giver; it counted toward the giver's reputation.
    Released = 2,
    /// Not delivered (in full): a penalty from the collateral went to the receiver.
    Penalised = 3,
    /// Neither receipt nor dispute in its window, or a jury that did not decide: the collateral went back, nothing
    /// counted.
    Returned = 4,
}

impl LegStatus {
    /// The lowercase name the API shows.
    pub fn name(self) -> &'static str {
        match self {
            LegStatus::Pending => "pending",
            LegStatus::Disputed => "disputed",
            LegStatus::Released => "released",
            LegStatus::Penalised => "penalised",
            LegStatus::Returned => "returned",
        }
    }
}

/// A barter leg on the ledger (key `3` ‖ leg id).
#[derive(Debug, Clone, PartialEq, Eq, serde_tuple::Serialize_tuple, serde_tuple::Deserialize_tuple)]
pub struct BarterLegState {
    pub cycle: Id,
    pub index: u8,
    pub giver: PublicKey,
    pub receiver: PublicKey,
    pub resource: Resource,
    pub quantity: u64,
    /// An energy leg's delivery interval start; 0 for the others.
    pub delivery_start_s: u64,
    /// The fee token, which the collateral is in.
    pub token: TokenId,
    pub collateral: u64,
    /// When it is next due: the end of an energy leg's interval plus `settlement_grace_ms`, the end of the receipt
    /// window, or the end of the jury's period.
    pub due_ms: u64,
    pub status: LegStatus,
    pub jurors: Vec<PublicKey>,
    pub votes_done: u32,
    pub votes_failed: u32,
    /// What the giver fell short by (Wh of an energy leg; a leg the jury found not done: its quantity).
    pub shortfall: u64,
    /// The part of the collateral the receiver got.
    pub penalty: u64,
    /// When it ended (0 while pending or disputed).
    pub closed_ms: u64,
}

/// The account that holds a barter leg's collateral: `blake3("kos/v1/barter-escrow" || 0x00 || leg id)`.
pub fn barter_escrow_account(leg: &Id) -> PublicKey {
    PublicKey(crate::hash::tagged("kos/v1/barter-escrow", &[leg.as_bytes()]).0)
}

/// Reads of barter legs (see [`Kv`]).
pub trait BarterReads: Kv {
    fn barter_leg(&self, leg: &Id) -> Option<BarterLegState> {
        value(self, &key(BARTER_LEG, &[leg.as_bytes()]))
    }

    /// The legs of a barter cycle, in leg order (those the ledger still keeps).
    fn barter_legs_of_cycle(&self, cycle: &Id) -> Vec<(Id, BarterLegState)> {
        (0..protocol::limits::BARTER_LEGS_MAX as u8)
            .map(|index| barter_leg_id(cycle, index))
            .filter_map(|leg| Some((leg, self.barter_leg(&leg)?)))
            .collect()
    }

    /// The collateral a barter cycle locks for `quantity` of `resource` given (PROTOCOL.md §10): energy at
    /// `penalty_per_kwh` (governable: the most its shortfall can cost), the others at the genesis's
    /// `barter_collateral_per_unit`, both per 1000 of the quantity.
    fn barter_collateral(&self, resource: Resource, quantity: u64) -> u64 {
        let rate = match resource {
            Resource::Energy => self.param("penalty_per_kwh"),
            _ => self.genesis().params.barter_collateral_per_unit,
        };
        protocol::message::value_milli(quantity, rate).unwrap_or(u64::MAX)
    }

    /// The one check of a barter offer before a node's board takes it, and of each leg when a cycle executes
    /// (PROTOCOL.md §9, *matches the ledger will honour*): its author's trading not frozen; energy given or wanted
    /// for an interval not over at `now_ms`; energy wanted for `quantity` given ([`asked`]) within the anti-hoarding
    /// limit of the interval; the author holds the collateral for `quantity` of what it gives, together with `open`
    /// (what else it gives in barter offers on the node's board).
    fn check_barter_offer(
        &self,
        author: &PublicKey,
        offer: &BarterOffer,
        quantity: u64,
        open: &[(Resource, u64)],
        now_ms: u64,
    ) -> Result<(), EntryError> {
        self.check_not_frozen(author)?;
        if offer.give == Resource::Energy || offer.want == Resource::Energy {
            let end_ms = offer.delivery_start_s.saturating_add(BARTER_ENERGY_INTERVAL_S).saturating_mul(1000);
            if end_ms <= now_ms {
                return Err(EntryError::DeliveryOver);
            }
        }
        if offer.want == Resource::Energy {
            self.check_bought(author, offer.delivery_start_s, asked(offer, quantity))?;
        }
        let needed = open
            .iter()
            .chain([&(offer.give, quantity)])
            .map(|(resource, quantity)| self.barter_collateral(*resource, *quantity))
            .fold(0u64, u64::saturating_add);
        let token = fee_token(self.genesis())?;
        let balance = self.balance(author, &token);
        if balance < needed {
            return Err(EntryError::InsufficientFunds { account: *author, token, balance, needed });
        }
        Ok(())
    }
}

impl<K: Kv + ?Sized> BarterReads for K {}

/// What a barter offer asks in return for `quantity` of what it gives: `⌈want_quantity × quantity /
/// give_quantity⌉` (a cycle may give it more, never less).
pub fn asked(offer: &BarterOffer, quantity: u64) -> u64 {
    let asked =
        (u128::from(offer.want_quantity) * u128::from(quantity)).div_ceil(u128::from(offer.give_quantity.max(1)));
    u64::try_from(asked).unwrap_or(u64::MAX)
}

fn fee_token(genesis: &Genesis) -> Result<TokenId, EntryError> {
    TokenId::new(genesis.params.fee_token.clone()).map_err(|error| EntryError::Invalid(error.to_string()))
}

fn leg_key(leg: &Id) -> Vec<u8> {
    key(BARTER_LEG, &[leg.as_bytes()])
}

fn due_key(due_ms: u64, leg: &Id) -> Vec<u8> {
    key(BARTER_LEG_DUE, &[&due_ms.to_be_bytes(), leg.as_bytes()])
}

/// Execution of barter cycles and their legs.
impl Pending<'_> {
    /// A barter cycle: every leg's offer filled by its part, its giver's collateral locked, an energy leg counted
    /// in both parties' energy traded for its interval (as an energy trade is).
    pub(super) fn barter(&mut self, id: &Id, cycle: &BarterCycle) -> Result<(), EntryError> {
        let legs = cycle.legs.as_slice();
        let token = fee_token(&self.base.genesis)?;
        let now = self.context.time_ms;
        let mut offers = Vec::with_capacity(legs.len());
        // Every leg checked (its giver also as a receiver of energy it wants) before any is counted.
        for leg in legs {
            let Body::BarterOffer(offer) = &leg.offer.body else {
                return Err(EntryError::Invalid("barter leg is not a barter offer".into()));
            };
            self.check_barter_offer(&leg.offer.author, offer, leg.give_quantity, &[], now)?;
            self.fill(&leg.offer, offer.give_quantity, leg.give_quantity)?;
            offers.push(offer);
        }
        for (index, (leg, offer)) in legs.iter().zip(&offers).enumerate() {
            let next = (index + 1) % legs.len();
            let (giver, receiver, quantity) = (leg.offer.author, legs[next].offer.author, leg.give_quantity);
            let leg_id = barter_leg_id(id, u8::try_from(index).unwrap_or(u8::MAX));
            let due_ms = if offer.give == Resource::Energy {
                let end_ms = offer.delivery_start_s.saturating_add(BARTER_ENERGY_INTERVAL_S).saturating_mul(1000);
                let release_ms = end_ms.saturating_add(self.param("settlement_grace_ms"));
                // The giver sold what it gives; the receiver bought what it asked for (a cycle may give it more,
                // which must not count against its own trades' deliveries).
                let bought = asked(offers[next], legs[next].give_quantity).min(quantity);
                self.add_interval_total(SOLD, &giver, offer.delivery_start_s, quantity, release_ms)?;
                self.add_interval_total(BOUGHT, &receiver, offer.delivery_start_s, bought, release_ms)?;
                release_ms
            } else {
                now.saturating_add(self.base.genesis.params.barter_receipt_window_ms.max(1))
            };
            let collateral = self.barter_collateral(offer.give, quantity);
            if collateral > 0 {
                self.move_tokens(&giver, &barter_escrow_account(&leg_id), &token, collateral)?;
            }
            let state = BarterLegState {
                cycle: *id,
                index: u8::try_from(index).unwrap_or(u8::MAX),
                giver,
                receiver,
                resource: offer.give,
                quantity,
                delivery_start_s: if offer.give == Resource::Energy { offer.delivery_start_s } else { 0 },
                token: token.clone(),
                collateral,
                due_ms,
                status: LegStatus::Pending,
                jurors: Vec::new(),
                votes_done: 0,
                votes_failed: 0,
                shortfall: 0,
                penalty: 0,
                closed_ms: 0,
            };
            self.write(leg_key(&leg_id), &state);
            self.put(due_key(due_ms, &leg_id), Some(Vec::new()));
        }
        Ok(())
    }

    fn leg_state(&self, leg: &Id) -> Result<BarterLegState, EntryError> {
        self.read(&leg_key(leg)).ok_or(EntryError::UnknownJob(*leg))
    }

    /// Saves a leg, moving its due index when its due time changed (and dropping it once the leg ended).
    fn save_leg(&mut self, leg: &Id, before: &BarterLegState, state: &BarterLegState) {
        let ended = matches!(state.status, LegStatus::Released | LegStatus::Penalised | LegStatus::Returned);
        if before.due_ms != state.due_ms || ended {
            self.delete(due_key(before.due_ms, leg));
        }
        if !ended && before.due_ms != state.due_ms {
            self.put(due_key(state.due_ms, leg), Some(Vec::new()));
        }
        self.write(leg_key(leg), state);
        if ended {
            self.forget_at(state.closed_ms.saturating_add(NOTICE_RETENTION_MS), &leg_key(leg));
        }
    }

    /// Ends a leg: `penalty` of its collateral to the receiver, the rest back to the giver; a delivered leg counts
    /// toward the giver's reputation, a penalised one as a failure.
    fn close_leg(&mut self, leg: &Id, mut state: BarterLegState, status: LegStatus, shortfall: u64, penalty: u64) {
        let before = state.clone();
        let escrow = barter_escrow_account(leg);
        let penalty = penalty.min(state.collateral);
        for (account, amount) in [(state.receiver, penalty), (state.giver, state.collateral - penalty)] {
            if amount > 0 {
                // The escrow account holds the collateral: these moves cannot fail.
                let _ = self.move_tokens(&escrow, &account, &state.token, amount);
            }
        }
        match status {
            LegStatus::Released => {
                self.count_delivery(&state.giver, &state.receiver);
                self.reputation(&state.giver, |reputation| reputation.barters += 1);
            }
            LegStatus::Penalised => self.reputation(&state.giver, |reputation| reputation.failures += 1),
            _ => {}
        }
        state.status = status;
        state.shortfall = shortfall;
        state.penalty = penalty;
        state.closed_ms = self.context.time_ms;
        if !state.jurors.is_empty() {
            for juror in &state.jurors {
                self.delete(key(JOB_JUROR_VOTE, &[leg.as_bytes(), juror.as_bytes()]));
            }
        }
        self.events.push(Event::BarterLegClosed {
            leg: *leg,
            giver: state.giver,
            receiver: state.receiver,
            status: status.name().to_owned(),
            penalty,
        });
        self.save_leg(leg, &before, &state);
    }

    /// A leg the jury or the receiver found not done: all its collateral to the receiver.
    fn penalise_leg(&mut self, leg: &Id, state: BarterLegState) {
        let (quantity, collateral) = (state.quantity, state.collateral);
        self.close_leg(leg, state, LegStatus::Penalised, quantity, collateral);
    }

    /// A verdict naming a barter leg: the receiver's receipt (`Done`) releases a pending compute, memory or bandwidth
    /// leg; a juror's vote on a disputed leg. An energy leg takes no verdict: its readings decide.
    pub(super) fn barter_verdict(&mut self, author: &PublicKey, leg: &Id, outcome: Outcome) -> Result<(), EntryError> {
        let mut state = self.leg_state(leg)?;
        if state.resource == Resource::Energy {
            return Err(EntryError::Job(JobError::SettledByReadings));
        }
        if self.context.time_ms >= state.due_ms {
            return Err(EntryError::Job(JobError::LegDue));
        }
        match (state.status, outcome) {
            (LegStatus::Pending, Outcome::Done) if state.receiver == *author => {
                self.close_leg(leg, state, LegStatus::Released, 0, 0);
                Ok(())
            }
            (LegStatus::Pending, Outcome::Failed) if state.receiver == *author => {
                Err(EntryError::Job(JobError::RejectByDispute))
            }
            (LegStatus::Disputed, outcome) if state.jurors.contains(author) => {
                let vote_key = key(JOB_JUROR_VOTE, &[leg.as_bytes(), author.as_bytes()]);
                if self.get(&vote_key).is_some() {
                    return Err(EntryError::Job(JobError::JurorVoted));
                }
                self.write(vote_key, &(outcome as u8));
                match outcome {
                    Outcome::Done => state.votes_done += 1,
                    Outcome::Failed => state.votes_failed += 1,
                }
                let majority = state.jurors.len() as u32 / 2 + 1;
                if state.votes_done >= majority {
                    self.close_leg(leg, state, LegStatus::Released, 0, 0);
                } else if state.votes_failed >= majority {
                    self.penalise_leg(leg, state);
                } else {
                    let before = self.leg_state(leg)?;
                    self.save_leg(leg, &before, &state);
                }
                Ok(())
            }
            _ => Err(EntryError::Job(JobError::NotYourVerdict)),
        }
    }

    /// A dispute naming a pending compute, memory or bandwidth leg, by its giver or receiver: a jury is drawn as for
    /// a job (the two parties excluded) and has `jury_period_ms`.
    pub(super) fn barter_dispute(&mut self, author: &PublicKey, leg: &Id) -> Result<(), EntryError> {
        let mut state = self.leg_state(leg)?;
        if state.resource == Resource::Energy {
            return Err(EntryError::Job(JobError::SettledByReadings));
        }
        if state.status != LegStatus::Pending {
            return Err(EntryError::Job(JobError::NotPending));
        }
        if self.context.time_ms >= state.due_ms {
            return Err(EntryError::Job(JobError::LegDue));
        }
        if *author != state.giver && *author != state.receiver {
            return Err(EntryError::Job(JobError::NotAParty));
        }
        // Nobody in the cycle sits on the jury: they all have a stake in its legs.
        let mut parties: Vec<PublicKey> =
            self.barter_legs_of_cycle(&state.cycle).into_iter().map(|(_, leg)| leg.giver).collect();
        parties.extend([state.giver, state.receiver]);
        let jurors = self.draw_jury(leg, &parties);
        if jurors.is_empty() {
            return Err(EntryError::Job(JobError::NoJuror));
        }
        let before = state.clone();
        state.status = LegStatus::Disputed;
        state.due_ms = self.context.time_ms.saturating_add(self.param("jury_period_ms").max(1));
        state.jurors = jurors.clone();
        self.save_leg(leg, &before, &state);
        self.events.push(Event::BarterLegDisputed { leg: *leg, jurors });
        Ok(())
    }

    /// End of block: energy legs whose interval and grace ended are checked against the giver's readings; receipt
    /// windows that ended return the collateral; juries whose period ended decide by their votes so far.
    pub(super) fn barter_legs_due(&mut self) {
        let now = self.context.time_ms;
        let rate = self.param("penalty_per_kwh");
        for index_key in self.due(BARTER_LEG_DUE, now).into_iter().take(BARTER_LEGS_DUE_PER_BLOCK) {
            self.delete(index_key.clone());
            let Some(leg) = index_key.get(9..41).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()).map(Id) else {
                continue;
            };
            let Some(state) = self.read::<BarterLegState>(&leg_key(&leg)) else { continue };
            match state.status {
                LegStatus::Pending if state.resource == Resource::Energy => {
                    // A barter pool has no rule: its energy legs count readings of any trust level.
                    let delivery = Delivery {
                        delivery_start_s: state.delivery_start_s,
                        interval_s: BARTER_ENERGY_INTERVAL_S,
                        quantity: state.quantity,
                        trust: protocol::message::Trust::Node,
                    };
                    let short = self.shortfall_wh(&state.giver, &delivery, true);
                    if short == 0 {
                        self.close_leg(&leg, state, LegStatus::Released, 0, 0);
                    } else {
                        let penalty = protocol::message::value_milli(short, rate).unwrap_or(u64::MAX);
                        self.close_leg(&leg, state, LegStatus::Penalised, short, penalty);
                    }
                }
                LegStatus::Pending => self.close_leg(&leg, state, LegStatus::Returned, 0, 0),
                LegStatus::Disputed if state.votes_done > state.votes_failed => {
                    self.close_leg(&leg, state, LegStatus::Released, 0, 0);
                }
                LegStatus::Disputed if state.votes_failed > state.votes_done => self.penalise_leg(&leg, state),
                LegStatus::Disputed => self.close_leg(&leg, state, LegStatus::Returned, 0, 0),
                _ => {}
            }
        }
    }
}
