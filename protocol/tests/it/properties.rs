//! Property tests: round trips, single-byte mutations, non-canonical encodings, batch = single verification.

use proptest::prelude::*;
use protocol::message::{
    Action, AddValidator, BARTER_ENERGY_INTERVAL_S, BarterOffer, Body, Cancel, Choice, Mechanism, MeterSource, Offer,
    PoolId, Proposal, Reading, RemoveValidator, Resource, SetParameter, Settlement, Side, Transfer, Vote,
};
use protocol::types::{Cell, Id, MeterId, ParameterName, PublicKey, Text, TokenId};
use protocol::validate::Error;
use protocol::{Config, Draft, Envelope, Keypair, NetworkId, codec, validate, validate_batch};

use crate::cbor;

const NOW_MS: u64 = 1_800_000_000_000;

fn config() -> Config {
    Config::new(NetworkId::new("kos-test").unwrap())
}

fn resource() -> impl Strategy<Value = Resource> {
    prop::sample::select(Resource::ALL.to_vec())
}

fn token() -> impl Strategy<Value = TokenId> {
    "[a-z0-9-]{1,16}".prop_map(|text| TokenId::new(text).unwrap())
}

fn cell() -> impl Strategy<Value = Cell> {
    "[0-9b-hjkmnp-z]{0,12}".prop_map(|text| Cell::new(text).unwrap())
}

fn pool() -> impl Strategy<Value = PoolId> {
    (resource(), token(), cell(), prop_oneof![Just(0u32), Just(900), Just(3600), 1..=86_400u32])
        .prop_map(|(resource, token, cell, interval_s)| PoolId { resource, token, cell, interval_s })
}

fn offer_for(pool: PoolId, side: Side) -> impl Strategy<Value = Offer> {
    (1..=u64::from(u32::MAX), 0..=10_000_000u64, 0..=100_000u64).prop_map(move |(quantity, unit_price, slot)| {
        // Any interval delivered before the offer expires (PROTOCOL.md §5, the delivery rule).
        let interval = u64::from(pool.interval_s);
        let last_slot = (NOW_MS + 60_000) / 1000 / interval.max(1);
        let delivery_start_s = (slot % (last_slot + 1)) * interval;
        Offer { pool: pool.clone(), side, quantity, unit_price, delivery_start_s }
    })
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Bid), Just(Side::Ask)]
}

fn sign(seed: [u8; 32], nonce: u64, body: Body) -> Envelope {
    Draft {
        network: NetworkId::new("kos-test").unwrap(),
        nonce,
        created_ms: NOW_MS - 1_000,
        expires_ms: NOW_MS + 60_000,
        body,
    }
    .sign(&Keypair::from_seed(&seed))
}

fn settlement() -> impl Strategy<Value = Body> {
    (pool(), any::<[u8; 32]>(), any::<[u8; 32]>(), 1..=1_000_000u64, 0..=1_000_000u64, 0..=1_000_000u64)
        .prop_filter("distinct authors", |(_, a, b, ..)| a != b)
        .prop_map(|(pool, bid_seed, ask_seed, quantity, low, high)| {
            let (low, high) = (low.min(high), low.max(high));
            let bid = Offer { pool: pool.clone(), side: Side::Bid, quantity, unit_price: high, delivery_start_s: 0 };
            let ask = Offer { pool, side: Side::Ask, quantity, unit_price: low, delivery_start_s: 0 };
            Body::Settlement(Settlement {
                bid: Box::new(sign(bid_seed, 1, Body::Offer(bid))),
                ask: Box::new(sign(ask_seed, 1, Body::Offer(ask))),
                quantity,
                unit_price: low + (high - low) / 2,
                mechanism: Mechanism::MidMarketRate,
            })
        })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Text(protocol::message::Empty)),
        ("[a-z][a-z0-9._-]{0,63}", any::<u64>()).prop_map(|(name, value)| Action::SetParameter(SetParameter {
            name: ParameterName::new(name).unwrap(),
            value
        })),
        (any::<[u8; 32]>(), 1..=u64::MAX).prop_map(|(seed, power)| Action::AddValidator(AddValidator {
            key: Keypair::from_seed(&seed).public(),
            power
        })),
        any::<[u8; 32]>().prop_map(|seed| Action::RemoveValidator(RemoveValidator { key: PublicKey(seed) })),
    ]
}

/// Any valid body of any kind (barter cycles are covered by the vectors and the validation tests).
pub fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (pool(), side()).prop_flat_map(|(pool, side)| offer_for(pool, side)).prop_map(Body::Offer),
        any::<[u8; 32]>().prop_map(|id| Body::Cancel(Cancel { offer: Id(id) })),
        ("[A-Za-z0-9._:/-]{1,64}", 1..=86_400u32, 0..=1_000u64, any::<[u64; 6]>()).prop_map(
            |(meter, interval_s, slot, values)| Body::Reading(Reading {
                meter: MeterId::new(meter).unwrap(),
                interval_start_s: slot * u64::from(interval_s),
                interval_s,
                import_wh: values[0],
                export_wh: values[1],
                generation_wh: values[2],
                consumption_wh: values[3],
                import_counter_wh: values[4],
                export_counter_wh: values[5],
                source: MeterSource::Mqtt,
                device: Default::default(),
            })
        ),
        (any::<[u8; 32]>(), token(), 1..=u64::MAX, ".{0,35}").prop_map(|(to, token, amount, memo)| {
            Body::Transfer(Transfer { to: PublicKey(to), token, amount, memo: Text::new(memo).unwrap() })
        }),
        settlement(),
        (resource(), resource(), 1..=u64::MAX, 1..=u64::MAX, cell(), any::<u64>())
            .prop_filter("different resources", |(give, want, ..)| give != want)
            .prop_map(|(give, want, give_quantity, want_quantity, cell, slot)| {
                // Energy given or wanted in a 15-minute interval that starts before the offer expires.
                let energy = give == Resource::Energy || want == Resource::Energy;
                let slots = (NOW_MS + 60_000) / 1000 / BARTER_ENERGY_INTERVAL_S;
                let delivery_start_s = if energy { (1 + slot % slots) * BARTER_ENERGY_INTERVAL_S } else { 0 };
                Body::BarterOffer(BarterOffer { give, give_quantity, want, want_quantity, cell, delivery_start_s })
            }),
        (action(), "[A-Za-z ]{1,60}", ".{0,200}", 1..=u32::MAX).prop_map(
            |(action, title, text, voting_period_blocks)| {
                Body::Proposal(Proposal {
                    action,
                    title: Text::new(format!("T{title}")).unwrap(),
                    text: Text::new(text).unwrap(),
                    voting_period_blocks,
                })
            }
        ),
        (any::<[u8; 32]>(), prop_oneof![Just(Choice::No), Just(Choice::Yes), Just(Choice::Abstain)])
            .prop_map(|(proposal, choice)| Body::Vote(Vote { proposal: Id(proposal), choice, stake: 0 })),
    ]
}

/// A valid signed message: (author seed, envelope).
pub fn signed() -> impl Strategy<Value = Envelope> {
    (any::<[u8; 32]>(), any::<u64>(), body())
        .prop_filter("a transfer to oneself is invalid", |(seed, _, body)| match body {
            Body::Transfer(transfer) => transfer.to != Keypair::from_seed(seed).public(),
            _ => true,
        })
        .prop_map(|(seed, nonce, body)| sign(seed, nonce, body))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_decode_round_trip(envelope in signed()) {
        let bytes = envelope.to_bytes();
        let decoded = Envelope::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&decoded, &envelope);
        prop_assert_eq!(decoded.to_bytes(), bytes.clone());
        let validated = validate(&bytes, &config(), NOW_MS).unwrap();
        prop_assert_eq!(validated.id, envelope.id());
        prop_assert_eq!(validated.envelope, envelope);
    }

    #[test]
    fn any_single_byte_mutation_is_invalid(envelope in signed(), position in any::<prop::sample::Index>(), delta in 1..=255u8) {
        let mut bytes = envelope.to_bytes();
        let position = position.index(bytes.len());
        bytes[position] = bytes[position].wrapping_add(delta);
        prop_assert!(validate(&bytes, &config(), NOW_MS).is_err(), "mutated byte {} still valid", position);
    }

    #[test]
    fn truncations_and_extensions_are_invalid(envelope in signed(), cut in any::<prop::sample::Index>(), extra in any::<u8>()) {
        let bytes = envelope.to_bytes();
        let cut = cut.index(bytes.len());
        prop_assert!(validate(&bytes[..cut], &config(), NOW_MS).is_err());
        let mut longer = bytes.clone();
        longer.push(extra);
        let result = validate(&longer, &config(), NOW_MS);
        prop_assert!(matches!(result, Err(Error::Malformed(codec::Error::TrailingBytes { count: 1 }))), "{:?}", result);
    }

    #[test]
    fn non_canonical_encodings_are_rejected(envelope in signed(), pick in any::<prop::sample::Index>()) {
        let bytes = envelope.to_bytes();
        let items = cbor::items(&bytes);
        // Every head but the 9-byte ones (already the widest form) can be written one size wider.
        let widenable: Vec<_> = items.iter().copied().filter(|item| item.head_len < 9).collect();
        let item = widenable[pick.index(widenable.len())];
        let wide = cbor::widen(&bytes, item);
        let result = validate(&wide, &config(), NOW_MS);
        prop_assert!(matches!(result, Err(Error::Malformed(codec::Error::NonCanonical { .. }))), "{:?}", result);
        if item.major != 0 {
            let open = cbor::indefinite(&bytes, item);
            let result = Envelope::from_bytes(&open);
            prop_assert!(matches!(result, Err(codec::Error::NonCanonical { .. })), "{:?}", result);
        }
    }

    #[test]
    fn batch_validation_agrees_with_single(envelopes in prop::collection::vec(signed(), 1..24), corrupt in prop::collection::vec(any::<prop::sample::Index>(), 0..4)) {
        let mut messages: Vec<Vec<u8>> = envelopes.iter().map(Envelope::to_bytes).collect();
        for index in &corrupt {
            let message = index.get_mut(&mut messages);
            let last = message.len() - 1;
            message[last] ^= 0x40;
        }
        let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let batch = validate_batch(&slices, &config(), NOW_MS);
        for (bytes, result) in slices.iter().zip(batch) {
            prop_assert_eq!(result, validate(bytes, &config(), NOW_MS));
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = validate(&bytes, &config(), NOW_MS);
        let _ = codec::decode::<Body>(&bytes, 1024);
    }
}
