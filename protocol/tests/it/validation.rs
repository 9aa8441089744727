//! One test per validation rule: each invalid message yields its own error variant.

use protocol::envelope::VERSION;
use protocol::keys::SignatureError;
use protocol::limits::ENVELOPE_BYTES_MAX;
use protocol::message::{
    BarterCycle, BarterLeg, BarterOffer, Body, Offer, PoolId, Proposal, Resource, Settlement, Side, Transfer,
};
use protocol::types::{BoundedVec, Cell, PublicKey, Text, TokenId};
use protocol::validate::Error;
use protocol::{Config, Draft, Envelope, Keypair, Kind, NetworkId, codec, validate};

const NOW_MS: u64 = 1_800_000_000_000;

fn network() -> NetworkId {
    NetworkId::new("kos-test").unwrap()
}

fn config() -> Config {
    Config::new(network())
}

fn key(n: u8) -> Keypair {
    Keypair::from_seed(&[n; 32])
}

fn pool() -> PoolId {
    "energy/credit/u33db/900".parse().unwrap()
}

fn offer(side: Side, quantity: u64, unit_price: u64) -> Body {
    Body::Offer(Offer { pool: pool(), side, quantity, unit_price, delivery_start_s: 1_800_000_900 })
}

fn draft(body: Body) -> Draft {
    Draft { network: network(), nonce: 7, created_ms: NOW_MS - 1_000, expires_ms: NOW_MS + 3_600_000, body }
}

fn signed(n: u8, body: Body) -> Envelope {
    draft(body).sign(&key(n))
}

fn check(envelope: &Envelope) -> Result<(), Error> {
    validate(&envelope.to_bytes(), &config(), NOW_MS).map(|_| ())
}

fn body_reason(result: Result<(), Error>) -> String {
    match result {
        Err(Error::InvalidBody { reason, .. }) => reason,
        other => panic!("expected an invalid body, got {other:?}"),
    }
}

#[test]
fn a_valid_offer_passes() {
    let envelope = signed(1, offer(Side::Ask, 500, 300));
    let validated = validate(&envelope.to_bytes(), &config(), NOW_MS).unwrap();
    assert_eq!(validated.id, envelope.id());
    assert_eq!(validated.envelope.author, key(1).public());
}

#[test]
fn oversized_messages_are_rejected_before_parsing() {
    let junk = vec![0x88; ENVELOPE_BYTES_MAX + 1];
    assert_eq!(
        validate(&junk, &config(), NOW_MS),
        Err(Error::TooLarge { bytes: ENVELOPE_BYTES_MAX + 1, max: ENVELOPE_BYTES_MAX })
    );
    let envelope = signed(1, offer(Side::Ask, 500, 300));
    let bytes = envelope.to_bytes();
    let small = Config { envelope_bytes_max: bytes.len() - 1, ..config() };
    assert!(matches!(validate(&bytes, &small, NOW_MS), Err(Error::TooLarge { .. })));
}

#[test]
fn malformed_bytes_are_rejected() {
    for bytes in [&[][..], &[0x00], &[0x88], &[0xa0], &[0x88, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01]] {
        assert!(matches!(validate(bytes, &config(), NOW_MS), Err(Error::Malformed(_))), "{bytes:02x?}");
    }
}

#[test]
fn other_versions_are_rejected() {
    let mut envelope = signed(1, offer(Side::Ask, 500, 300));
    envelope.version = VERSION + 1;
    envelope.signature = key(1).sign_digest(&envelope.signing_digest());
    assert_eq!(check(&envelope), Err(Error::UnsupportedVersion { version: VERSION + 1 }));
}

#[test]
fn messages_of_another_network_are_rejected() {
    let mut other = draft(offer(Side::Ask, 500, 300));
    other.network = NetworkId::new("kos-other").unwrap();
    let envelope = other.sign(&key(1));
    assert_eq!(check(&envelope), Err(Error::WrongNetwork { expected: network(), found: envelope.network.clone() }));
    // Swapping the network id for ours breaks the signature: the digest binds the network.
    let mut swapped = envelope;
    swapped.network = network();
    assert_eq!(check(&swapped), Err(Error::BadSignature(SignatureError::Mismatch)));
}

#[test]
fn times_are_checked() {
    // A continuous pool's offer: no delivery interval ties its lifetime (see the delivery rule's test).
    let continuous: PoolId = "energy/credit/u33db/0".parse().unwrap();
    let body =
        Body::Offer(Offer { pool: continuous, side: Side::Ask, quantity: 500, unit_price: 300, delivery_start_s: 0 });
    let at = |created_ms: u64, expires_ms: u64| {
        let mut draft = draft(body.clone());
        draft.created_ms = created_ms;
        draft.expires_ms = expires_ms;
        check(&draft.sign(&key(1)))
    };
    assert_eq!(at(NOW_MS, NOW_MS), Err(Error::ExpiresBeforeCreated { created_ms: NOW_MS, expires_ms: NOW_MS }));
    let lifetime_max = Config::LIFETIME_MS_MAX_DEFAULT;
    assert_eq!(
        at(NOW_MS, NOW_MS + lifetime_max + 1),
        Err(Error::LifetimeTooLong { lifetime_ms: lifetime_max + 1, max: lifetime_max })
    );
    assert_eq!(at(NOW_MS, NOW_MS + lifetime_max), Ok(()));
    let skew = Config::CLOCK_SKEW_MS_MAX_DEFAULT;
    assert_eq!(at(NOW_MS + skew, NOW_MS + skew + 1_000), Ok(()), "within the allowed skew");
    assert_eq!(
        at(NOW_MS + skew + 1, NOW_MS + skew + 1_000),
        Err(Error::FromFuture { created_ms: NOW_MS + skew + 1, now_ms: NOW_MS, skew_ms_max: skew })
    );
    assert_eq!(at(NOW_MS - 2_000, NOW_MS), Err(Error::Expired { expires_ms: NOW_MS, now_ms: NOW_MS }));
    assert_eq!(at(NOW_MS - 2_000, NOW_MS + 1), Ok(()));
}

#[test]
fn bad_signatures_are_rejected() {
    let mut envelope = signed(1, offer(Side::Ask, 500, 300));
    envelope.signature.0[10] ^= 1;
    assert_eq!(check(&envelope), Err(Error::BadSignature(SignatureError::Mismatch)));
    // Another key's signature over the same content.
    let mut forged = signed(1, offer(Side::Ask, 500, 300));
    forged.signature = key(2).sign_digest(&forged.signing_digest());
    assert_eq!(check(&forged), Err(Error::BadSignature(SignatureError::Mismatch)));
    // S >= the group order (a malleated signature) is rejected.
    let mut malleable = signed(1, offer(Side::Ask, 500, 300));
    malleable.signature.0[63] |= 0xf0;
    assert_eq!(check(&malleable), Err(Error::BadSignature(SignatureError::Mismatch)));
    // A small-order key cannot author anything.
    let mut weak = signed(1, offer(Side::Ask, 500, 300));
    let mut identity = [0u8; 32];
    identity[0] = 1;
    weak.author = PublicKey(identity);
    assert_eq!(check(&weak), Err(Error::BadSignature(SignatureError::InvalidKey)));
}

#[test]
fn offer_bodies_are_checked() {
    assert_eq!(body_reason(check(&signed(1, offer(Side::Bid, 0, 300)))), "quantity is 0");
    assert_eq!(
        body_reason(check(&signed(1, offer(Side::Bid, u64::MAX, u64::MAX)))),
        "quantity * unit_price overflows 64 bits"
    );
    let misaligned = Body::Offer(Offer {
        pool: pool(),
        side: Side::Bid,
        quantity: 1,
        unit_price: 1,
        delivery_start_s: 1_800_000_001,
    });
    assert!(body_reason(check(&signed(1, misaligned))).contains("multiple"));
    let continuous: PoolId = "compute/credit/*/0".parse().unwrap();
    let dated =
        Body::Offer(Offer { pool: continuous, side: Side::Bid, quantity: 1, unit_price: 1, delivery_start_s: 5 });
    assert!(body_reason(check(&signed(1, dated))).contains("continuous"));
}

/// An interval pool's offer must be deliverable while it lives, and not beyond the delivery horizon: otherwise it
/// holds a place in its pool until an auction that may never come (issue 25: 256 bids with a 20 s lifetime filled
/// an owner's slots for good).
#[test]
fn an_offers_delivery_starts_before_it_expires_and_within_the_horizon() {
    let at = |delivery_start_s: u64, created_ms: u64, expires_ms: u64| {
        let body = Body::Offer(Offer { pool: pool(), side: Side::Bid, quantity: 1, unit_price: 1, delivery_start_s });
        Draft { network: network(), nonce: 7, created_ms, expires_ms, body }.sign(&key(1))
    };
    // Expiring exactly when delivery starts is allowed; a second earlier is not.
    let start_s = 1_800_000_900;
    assert_eq!(check(&at(start_s, NOW_MS - 1_000, start_s * 1000)), Ok(()));
    assert_eq!(
        body_reason(check(&at(start_s, NOW_MS - 1_000, start_s * 1000 - 1_000))),
        "delivery starts after the offer expires"
    );
    // The horizon counts from the offer's creation, in whole seconds.
    let horizon_s = protocol::limits::DELIVERY_HORIZON_SECONDS_MAX;
    let config = Config { lifetime_ms_max: 30 * 86_400_000, ..config() };
    let created_ms = NOW_MS - 1_000;
    let last_s = (created_ms / 1000 + horizon_s) / 900 * 900;
    let far = |start_s: u64| at(start_s, created_ms, start_s * 1000 + 1);
    assert_eq!(validate(&far(last_s).to_bytes(), &config, NOW_MS).map(|_| ()), Ok(()));
    let beyond = validate(&far(last_s + 900).to_bytes(), &config, NOW_MS).map(|_| ());
    assert!(body_reason(beyond).starts_with("delivery starts beyond the horizon"));
    // The attack of the issue: a delivery in the year 584,942,417,355 (u64::MAX ms).
    let end_of_time = (u64::MAX / 1000) / 900 * 900;
    assert!(check(&at(end_of_time, NOW_MS - 1_000, NOW_MS + 20_000)).is_err());
    // Continuous pools have no delivery interval.
    let continuous: PoolId = "compute/credit/*/0".parse().unwrap();
    let body =
        Body::Offer(Offer { pool: continuous, side: Side::Bid, quantity: 1, unit_price: 1, delivery_start_s: 0 });
    assert_eq!(check(&signed(1, body)), Ok(()));
    // A settlement nesting such an offer is not refused for it: the rule keeps offers out of pools (the gossip door
    // and the market), and what the ledger settles is bound by the offers' signatures (no rule change for the
    // ledger, which would split validators of different versions).
    let late_ask = at(start_s, NOW_MS - 1_000, NOW_MS + 20_000);
    let bid = at(start_s, NOW_MS - 1_000, start_s * 1000);
    let Body::Offer(mut ask_offer) = late_ask.body.clone() else { unreachable!() };
    ask_offer.side = Side::Ask;
    let ask = Draft {
        network: network(),
        nonce: 8,
        created_ms: NOW_MS - 1_000,
        expires_ms: NOW_MS + 20_000,
        body: Body::Offer(ask_offer),
    }
    .sign(&key(2));
    assert_eq!(check(&signed(3, settlement(bid, ask, 1, 1))), Ok(()));
}
#[test]
fn transfers_to_oneself_or_of_nothing_are_rejected() {
    let transfer = |to: PublicKey, amount| {
        Body::Transfer(Transfer { to, token: TokenId::new("credit").unwrap(), amount, memo: Text::new("").unwrap() })
    };
    assert_eq!(check(&signed(1, transfer(key(2).public(), 5))), Ok(()));
    assert_eq!(body_reason(check(&signed(1, transfer(key(2).public(), 0)))), "amount is 0");
    assert_eq!(body_reason(check(&signed(1, transfer(key(1).public(), 5)))), "transfer to the author itself");
}

#[test]
fn proposals_need_a_title_and_a_period() {
    let proposal = |title: &str, period| {
        Body::Proposal(Proposal {
            action: protocol::message::Action::Text(protocol::message::Empty),
            title: Text::new(title).unwrap(),
            text: Text::new("").unwrap(),
            voting_period_blocks: period,
        })
    };
    assert_eq!(check(&signed(1, proposal("Lower the fee", 10))), Ok(()));
    assert_eq!(body_reason(check(&signed(1, proposal("  ", 10)))), "empty title");
    assert_eq!(body_reason(check(&signed(1, proposal("Lower the fee", 0)))), "voting_period_blocks is 0");
}

fn settlement(bid: Envelope, ask: Envelope, quantity: u64, unit_price: u64) -> Body {
    Body::Settlement(Settlement {
        bid: Box::new(bid),
        ask: Box::new(ask),
        quantity,
        unit_price,
        mechanism: protocol::message::Mechanism::PayAsClear,
    })
}

#[test]
fn settlements_must_respect_both_offers() {
    let bid = signed(1, offer(Side::Bid, 1_000, 320));
    let ask = signed(2, offer(Side::Ask, 600, 250));
    assert_eq!(check(&signed(3, settlement(bid.clone(), ask.clone(), 600, 300))), Ok(()));
    let reason = |body| body_reason(check(&signed(3, body)));
    assert_eq!(reason(settlement(bid.clone(), ask.clone(), 601, 300)), "quantity exceeds an offer's quantity");
    assert_eq!(reason(settlement(bid.clone(), ask.clone(), 0, 300)), "quantity is 0");
    assert_eq!(reason(settlement(bid.clone(), ask.clone(), 600, 321)), "price outside the offers' limits");
    assert_eq!(reason(settlement(bid.clone(), ask.clone(), 600, 249)), "price outside the offers' limits");
    assert_eq!(reason(settlement(ask.clone(), bid.clone(), 600, 300)), "bid must be a bid and ask an ask");
    let own_ask = signed(1, offer(Side::Ask, 600, 250));
    assert_eq!(reason(settlement(bid.clone(), own_ask, 600, 300)), "an author cannot trade with itself");
    let other_pool = Body::Offer(Offer {
        pool: "energy/credit/u33dc/900".parse().unwrap(),
        side: Side::Ask,
        quantity: 600,
        unit_price: 250,
        delivery_start_s: 1_800_000_900,
    });
    assert_eq!(reason(settlement(bid.clone(), signed(2, other_pool), 600, 300)), "the offers are in different pools");
    let later = Body::Offer(Offer {
        pool: pool(),
        side: Side::Ask,
        quantity: 600,
        unit_price: 250,
        delivery_start_s: 1_800_001_800,
    });
    assert_eq!(reason(settlement(bid, signed(2, later), 600, 300)), "the offers are for different delivery intervals");
}

#[test]
fn nested_offers_are_validated_like_messages() {
    let bid = signed(1, offer(Side::Bid, 1_000, 320));
    let inner = |result: Result<(), Error>| match result {
        Err(Error::InvalidInner { kind: Kind::Settlement, role, source }) => (role, *source),
        other => panic!("expected an invalid inner message, got {other:?}"),
    };
    let mut forged = signed(2, offer(Side::Ask, 600, 250));
    forged.signature.0[0] ^= 1;
    let (role, source) = inner(check(&signed(3, settlement(bid.clone(), forged, 600, 300))));
    assert_eq!((role, source), ("ask", Error::BadSignature(SignatureError::Mismatch)));

    // An ask that had expired when the settlement was made.
    let mut stale = draft(offer(Side::Ask, 600, 250));
    stale.created_ms = NOW_MS - 20_000;
    stale.expires_ms = NOW_MS - 10_000;
    let (_, source) = inner(check(&signed(3, settlement(bid.clone(), stale.sign(&key(2)), 600, 300))));
    assert!(matches!(source, Error::Expired { .. }));

    // An ask from another network.
    let mut foreign = draft(offer(Side::Ask, 600, 250));
    foreign.network = NetworkId::new("kos-other").unwrap();
    let (_, source) = inner(check(&signed(3, settlement(bid.clone(), foreign.sign(&key(2)), 600, 300))));
    assert!(matches!(source, Error::WrongNetwork { .. }));

    // A settlement nested in a settlement.
    let ask = signed(2, offer(Side::Ask, 600, 250));
    let nested = signed(3, settlement(bid.clone(), ask, 600, 300));
    let (role, source) = inner(check(&signed(4, settlement(bid, nested, 600, 300))));
    assert_eq!(role, "ask");
    assert!(matches!(source, Error::InvalidBody { kind: Kind::Settlement, .. }));
}

fn barter(n: u8, give: Resource, give_quantity: u64, want: Resource, want_quantity: u64) -> Envelope {
    signed(
        n,
        Body::BarterOffer(BarterOffer {
            give,
            give_quantity,
            want,
            want_quantity,
            cell: Cell::new("u33d").unwrap(),
            delivery_start_s: 0,
        }),
    )
}

fn cycle(legs: Vec<(Envelope, u64)>) -> Body {
    let legs = legs.into_iter().map(|(offer, give_quantity)| BarterLeg { offer, give_quantity }).collect();
    Body::BarterCycle(BarterCycle { legs: BoundedVec::new(legs).unwrap() })
}

#[test]
fn barter_cycles_respect_every_ratio() {
    // 1 gives compute, wants bandwidth (at least 2 per compute); 2 gives bandwidth, wants memory (1 per 4);
    // 3 gives memory, wants compute (1 per memory). Leg i gives to leg i+1: 1 -> 3 -> 2 -> 1.
    let a = barter(1, Resource::Compute, 100, Resource::Bandwidth, 200);
    let b = barter(2, Resource::Bandwidth, 400, Resource::Memory, 100);
    let c = barter(3, Resource::Memory, 50, Resource::Compute, 50);
    assert_eq!(check(&signed(9, cycle(vec![(a.clone(), 50), (c.clone(), 25), (b.clone(), 100)]))), Ok(()));
    let reason = |body| body_reason(check(&signed(9, body)));
    // 1 receives 90 bandwidth for 50 compute: below its 2:1.
    assert_eq!(
        reason(cycle(vec![(a.clone(), 50), (c.clone(), 25), (b.clone(), 90)])),
        "a leg receives less than its offer's ratio"
    );
    assert_eq!(
        reason(cycle(vec![(a.clone(), 101), (c.clone(), 50), (b.clone(), 202)])),
        "a leg gives 0 or more than its offer"
    );
    assert_eq!(
        reason(cycle(vec![(a.clone(), 50), (b.clone(), 100), (c.clone(), 25)])),
        "a leg does not receive the resource it wants"
    );
    let a_again = barter(1, Resource::Memory, 50, Resource::Compute, 50);
    assert_eq!(reason(cycle(vec![(a.clone(), 50), (a_again, 25), (b.clone(), 100)])), "an author appears in two legs");
    // A cycle lives in one barter pool: a leg from another cell makes it invalid, however good its ratios.
    let elsewhere = signed(
        3,
        Body::BarterOffer(BarterOffer {
            give: Resource::Memory,
            give_quantity: 50,
            want: Resource::Compute,
            want_quantity: 50,
            cell: Cell::new("u33e").unwrap(),
            delivery_start_s: 0,
        }),
    );
    assert_eq!(
        reason(cycle(vec![(a.clone(), 50), (elsewhere, 25), (b, 100)])),
        "the legs' offers are of different cells (barter pools)"
    );
    // A cycle of one leg does not decode: cycles have 2 to 8 legs.
    let one = signed(9, cycle(vec![(a.clone(), 50), (c, 25)]));
    let mut bytes = one.to_bytes();
    // body = [7, [legs]]: 0x82 0x07 0x81 0x82 ...; make the legs array claim one item.
    let position = bytes.windows(4).position(|w| w == [0x82, 0x07, 0x81, 0x82]).expect("legs array") + 3;
    bytes[position] = 0x81;
    assert!(matches!(Envelope::from_bytes(&bytes), Err(codec::Error::Invalid(_) | codec::Error::TrailingBytes { .. })));
}

#[test]
fn guilds_need_sorted_distinct_members_and_a_reachable_threshold() {
    let mut keys: Vec<PublicKey> = (1..=3).map(|n| key(n).public()).collect();
    keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let guild = |name: &str, members: Vec<PublicKey>, threshold| {
        Body::Guild(protocol::message::Guild {
            name: Text::new(name).unwrap(),
            members: BoundedVec::new(members).unwrap(),
            threshold,
        })
    };
    assert_eq!(check(&signed(1, guild("co-op", keys.clone(), 2))), Ok(()));
    assert_eq!(check(&signed(1, guild("co-op", keys.clone(), 3))), Ok(()));
    assert_eq!(body_reason(check(&signed(1, guild(" ", keys.clone(), 2)))), "empty name");
    let threshold = "threshold not between 1 and the number of members";
    assert_eq!(body_reason(check(&signed(1, guild("co-op", keys.clone(), 0)))), threshold);
    assert_eq!(body_reason(check(&signed(1, guild("co-op", keys.clone(), 4)))), threshold);
    let order = "members not in strictly increasing order";
    let reversed: Vec<PublicKey> = keys.iter().rev().copied().collect();
    assert_eq!(body_reason(check(&signed(1, guild("co-op", reversed, 2)))), order);
    let twice = vec![keys[0], keys[0], keys[1]];
    assert_eq!(body_reason(check(&signed(1, guild("co-op", twice, 2)))), order);
    // More than 32 members do not even decode.
    let many: Vec<PublicKey> = (0..33u8).map(|n| PublicKey([n; 32])).collect();
    assert!(BoundedVec::<PublicKey, 1, 32>::new(many).is_err());
    let spend = |to: PublicKey, amount| {
        Body::GuildSpend(protocol::message::GuildSpend {
            guild: PublicKey([9; 32]),
            to,
            token: TokenId::new("credit").unwrap(),
            amount,
            memo: Text::new("").unwrap(),
        })
    };
    assert_eq!(check(&signed(1, spend(keys[0], 5))), Ok(()));
    assert_eq!(body_reason(check(&signed(1, spend(keys[0], 0)))), "amount is 0");
    assert_eq!(body_reason(check(&signed(1, spend(PublicKey([9; 32]), 5)))), "spend to the guild itself");
}

#[test]
fn a_feeder_names_one_meter_and_its_cell_and_implausible_generation_is_the_ledgers_alert() {
    use protocol::message::{Alert, AlertRule, Asset, AssetKind, Limits};
    use protocol::types::MeterId;
    let meters =
        |names: &[&str]| BoundedVec::new(names.iter().map(|name| MeterId::new(*name).unwrap()).collect()).unwrap();
    let feeder = |names: &[&str], cell: &str| {
        Body::Asset(Asset {
            kind: AssetKind::Feeder,
            purpose: Text::new("the street's feeder").unwrap(),
            owner: key(2).public(),
            meters: meters(names),
            limits: Limits {
                generation_w_max: 0,
                import_w_max: 100_000,
                export_w_max: 100_000,
                consumption_w_max: 0,
                storage_w_max: 0,
                storage_wh: 0,
            },
            cell: Cell::new(cell).unwrap(),
            commissioned_s: 0,
            maintenance_interval_s: 0,
            device: BoundedVec::default(),
        })
    };
    assert_eq!(check(&signed(1, feeder(&["feeder"], "u33db"))), Ok(()));
    assert_eq!(body_reason(check(&signed(1, feeder(&["a", "b"], "u33db")))), "a feeder names exactly one meter");
    assert_eq!(body_reason(check(&signed(1, feeder(&[], "u33db")))), "a feeder names exactly one meter");
    assert_eq!(body_reason(check(&signed(1, feeder(&["feeder"], "")))), "a feeder names its cell");
    let alert = |rule| {
        Body::Alert(Alert { asset: protocol::Id([3; 32]), rule, measured: 2, threshold: 1, interval_start_s: 900 })
    };
    assert_eq!(check(&signed(1, alert(AlertRule::Silent))), Ok(()));
    let reason = body_reason(check(&signed(1, alert(AlertRule::Implausible))));
    assert_eq!(reason, "implausible generation is the ledger's to raise");
}
