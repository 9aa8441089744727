//! Test vectors: one signed message of every kind, built from fixed seeds, so that implementations in other
//! languages can check their encoding, ids, digests and signatures byte for byte. PROTOCOL.md lists them and a
//! test keeps it in step with this code.

use std::fmt::Write as _;

use crate::envelope::{Draft, Envelope};
use crate::keys::Keypair;
use crate::message::{
    Action, AddValidator, Alert, AlertRule, Asset, AssetKind, BarterCycle, BarterLeg, BarterOffer, Body, Burn, Cancel,
    Choice, Freeze, Guild, GuildApproval, GuildSpend, Limits, Measure, Mechanism, MeterSource, Mint, Offer, Override,
    PoolId, Proposal, Reading, Report, Resource, Settlement, Severity, Side, Transfer, Upgrade, Vote, guild_account,
};
use crate::message::{Attestation, DeviceKey, OcmfRecord, check_attestation, device_reading_digest};
use crate::message::{
    Award, AwardRule, Bid, ComputeTask, Deliver, Dispute, Evidence, Job, JobKind, Need, Opening, Outcome, Proof,
    Verdict, merkle_path, run_task, sample_indices,
};
use crate::types::{BoundedVec, Cell, Id, MeterId, NetworkId, P256Key, PublicKey, Signature, Skill, Text, TokenId};

/// The network id of every vector.
pub const NETWORK: &str = "kos-vectors";
/// 2026-01-01T00:00:00Z: `created_ms` of every vector.
pub const CREATED_MS: u64 = 1_767_225_600_000;
/// Lifetime of every vector: 15 minutes.
pub const LIFETIME_MS: u64 = 900_000;

/// The secret seed of test author `n`: `blake3("kos test vector author " || decimal n)`.
pub fn seed(author: u8) -> [u8; 32] {
    *blake3::hash(format!("kos test vector author {author}").as_bytes()).as_bytes()
}

/// One vector: a name, its author's seed and the signed message.
#[derive(Debug, Clone)]
pub struct Vector {
    pub name: &'static str,
    pub author: u8,
    pub envelope: Envelope,
}

impl Vector {
    /// The vector as the text block PROTOCOL.md shows (and its test parses).
    pub fn to_block(&self) -> String {
        let envelope = &self.envelope;
        let mut block = String::new();
        let lines = [
            ("vector", self.name.to_owned()),
            ("secret-seed", hex::encode(seed(self.author))),
            ("public-key", envelope.author.to_hex()),
            ("unsigned", hex::encode(envelope.unsigned_bytes())),
            ("id", envelope.id().to_hex()),
            ("signing-digest", hex::encode(envelope.signing_digest())),
            ("signature", envelope.signature.to_hex()),
            ("envelope", hex::encode(envelope.to_bytes())),
        ];
        for (key, value) in lines {
            let _ = writeln!(block, "{key}: {value}");
        }
        block
    }
}

fn network() -> NetworkId {
    NetworkId::new(NETWORK).unwrap_or_else(|error| unreachable!("{error}"))
}

fn sign(author: u8, nonce: u64, body: Body) -> Envelope {
    Draft { network: network(), nonce, created_ms: CREATED_MS, expires_ms: CREATED_MS + LIFETIME_MS, body }
        .sign(&Keypair::from_seed(&seed(author)))
}

fn pool() -> PoolId {
    PoolId {
        resource: Resource::Energy,
        token: TokenId::new("credit").unwrap_or_else(|error| unreachable!("{error}")),
        cell: Cell::new("u33db").unwrap_or_else(|error| unreachable!("{error}")),
        interval_s: 900,
    }
}

fn offer(side: Side, quantity: u64, unit_price: u64) -> Body {
    Body::Offer(Offer { pool: pool(), side, quantity, unit_price, delivery_start_s: 1_767_226_500 })
}

fn barter(give: Resource, give_quantity: u64, want: Resource, want_quantity: u64) -> Body {
    Body::BarterOffer(BarterOffer {
        give,
        give_quantity,
        want,
        want_quantity,
        cell: Cell::new("u33d").unwrap_or_else(|error| unreachable!("{error}")),
        delivery_start_s: 0,
    })
}

fn text<const MAX: usize>(text: &str) -> Text<MAX> {
    Text::new(text).unwrap_or_else(|error| unreachable!("{error}"))
}

/// Every vector, one or more per message kind.
pub fn all() -> Vec<Vector> {
    let mut vectors = trade_vectors();
    vectors.extend(governance_vectors());
    let envelope_of = |vectors: &[Vector], name: &str| {
        vectors
            .iter()
            .find(|vector| vector.name == name)
            .map(|vector| vector.envelope.clone())
            .unwrap_or_else(|| unreachable!("vector {name}"))
    };
    let (guild, reading) = (envelope_of(&vectors, "guild"), envelope_of(&vectors, "reading"));
    vectors.extend(asset_vectors(&guild, reading));
    vectors.extend(job_vectors());
    vectors.extend(device_vectors());
    vectors
}

/// Offers, a reading, a transfer, a settlement and a barter cycle.
fn trade_vectors() -> Vec<Vector> {
    let bid = sign(1, 1, offer(Side::Bid, 2_000, 310));
    let ask = sign(2, 1, offer(Side::Ask, 1_500, 240));
    let barter_a = sign(1, 2, barter(Resource::Compute, 4_000, Resource::Bandwidth, 10_000));
    let barter_b = sign(2, 2, barter(Resource::Bandwidth, 12_000, Resource::Memory, 3_000));
    let barter_c = sign(3, 1, barter(Resource::Memory, 3_000, Resource::Compute, 4_000));
    // Leg i gives to leg i + 1: compute 1 -> 3, memory 3 -> 2, bandwidth 2 -> 1.
    let legs = vec![
        BarterLeg { offer: barter_a.clone(), give_quantity: 4_000 },
        BarterLeg { offer: barter_c.clone(), give_quantity: 3_000 },
        BarterLeg { offer: barter_b.clone(), give_quantity: 10_000 },
    ];
    let vector = |name, author, envelope| Vector { name, author, envelope };
    vec![
        vector("offer-bid", 1, bid.clone()),
        vector("offer-ask", 2, ask.clone()),
        vector("cancel", 1, sign(1, 3, Body::Cancel(Cancel { offer: bid.id() }))),
        vector(
            "reading",
            2,
            sign(
                2,
                3,
                Body::Reading(Reading {
                    meter: MeterId::new("sim:home-2").unwrap_or_else(|error| unreachable!("{error}")),
                    interval_start_s: 1_767_224_700,
                    interval_s: 900,
                    import_wh: 0,
                    export_wh: 412,
                    generation_wh: 655,
                    consumption_wh: 243,
                    import_counter_wh: 1_204_331,
                    export_counter_wh: 3_310_207,
                    source: MeterSource::Simulated,
                    device: Default::default(),
                }),
            ),
        ),
        vector(
            "transfer",
            1,
            sign(
                1,
                4,
                Body::Transfer(Transfer {
                    to: Keypair::from_seed(&seed(2)).public(),
                    token: TokenId::new("credit").unwrap_or_else(|error| unreachable!("{error}")),
                    amount: 12_500,
                    memo: text("thanks for the sun"),
                }),
            ),
        ),
        vector(
            "settlement",
            3,
            sign(
                3,
                3,
                Body::Settlement(Settlement {
                    bid: Box::new(bid),
                    ask: Box::new(ask),
                    quantity: 1_500,
                    unit_price: 275,
                    mechanism: Mechanism::MidMarketRate,
                }),
            ),
        ),
        vector("barter-offer", 1, barter_a),
        vector(
            "barter-cycle",
            3,
            sign(
                3,
                4,
                Body::BarterCycle(BarterCycle {
                    legs: BoundedVec::new(legs).unwrap_or_else(|error| unreachable!("{error}")),
                }),
            ),
        ),
    ]
}

/// A proposal and its vote, an override, a mint and a burn, a guild and its spend.
fn governance_vectors() -> Vec<Vector> {
    let proposal = sign(
        3,
        2,
        Body::Proposal(Proposal {
            action: Action::AddValidator(AddValidator { key: Keypair::from_seed(&seed(4)).public(), power: 10 }),
            title: text("Add the school's battery as a validator"),
            text: text("It has run a kos node for six months with 99.9% uptime."),
            voting_period_blocks: 1_000,
        }),
    );
    // Authors 1, 2 and 3 form a guild in which any two may spend.
    let mut members = vec![public_key(1), public_key(2), public_key(3)];
    members.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let guild = sign(
        1,
        8,
        Body::Guild(Guild {
            name: text("Solar roof co-op"),
            members: BoundedVec::new(members).unwrap_or_else(|error| unreachable!("{error}")),
            threshold: 2,
        }),
    );
    let spend = sign(
        2,
        8,
        Body::GuildSpend(GuildSpend {
            guild: guild_account(&guild.id()),
            to: public_key(4),
            token: TokenId::new("credit").unwrap_or_else(|error| unreachable!("{error}")),
            amount: 25_000,
            memo: text("inverter repair"),
        }),
    );
    let vector = |name, author, envelope| Vector { name, author, envelope };
    vec![
        vector("proposal", 3, proposal.clone()),
        vector("vote", 4, sign(4, 1, Body::Vote(Vote { proposal: proposal.id(), choice: Choice::Yes, stake: 0 }))),
        vector(
            "proposal-override",
            1,
            sign(
                1,
                10,
                Body::Proposal(Proposal {
                    action: Action::Override(Override {
                        measure: Measure::Freeze(Freeze { account: public_key(2) }),
                        duration_blocks: 600,
                    }),
                    title: text("Freeze the runaway trading agent"),
                    text: text("It has placed thousands of offers it never settles."),
                    voting_period_blocks: 100,
                }),
            ),
        ),
        vector(
            "proposal-upgrade",
            2,
            sign(
                2,
                11,
                Body::Proposal(Proposal {
                    action: Action::Upgrade(Upgrade { version: 2, height: 250_000, info: text("kos 0.2 or later") }),
                    title: text("Ledger protocol version 2"),
                    text: text("Every node runs kos 0.2 or later by block 250,000."),
                    voting_period_blocks: 10_000,
                }),
            ),
        ),
        vector(
            "mint",
            4,
            sign(
                4,
                2,
                Body::Mint(Mint {
                    to: Keypair::from_seed(&seed(1)).public(),
                    token: TokenId::new("eco").unwrap_or_else(|error| unreachable!("{error}")),
                    amount: 3_000,
                    memo: text("community solar bonus"),
                }),
            ),
        ),
        vector(
            "burn",
            2,
            sign(
                2,
                7,
                Body::Burn(Burn {
                    token: TokenId::new("credit").unwrap_or_else(|error| unreachable!("{error}")),
                    amount: 1_000,
                    memo: text("redeemed"),
                }),
            ),
        ),
        vector("guild", 1, guild.clone()),
        vector("guild-spend", 2, spend.clone()),
        vector("guild-approval", 3, sign(3, 3, Body::GuildApproval(GuildApproval { spend: spend.id() }))),
    ]
}

/// A street battery (owned by the guild), an alert on it and a report with a reading as evidence.
fn asset_vectors(guild: &Envelope, reading: Envelope) -> Vec<Vector> {
    let vector = |name, author, envelope| Vector { name, author, envelope };
    let mut vectors = vec![vector(
        "asset",
        1,
        sign(
            1,
            9,
            Body::Asset(Asset {
                kind: AssetKind::Battery,
                purpose: text("street battery, 10 kWh"),
                owner: guild_account(&guild.id()),
                meters: BoundedVec::new(vec![
                    MeterId::new("battery-1").unwrap_or_else(|error| unreachable!("{error}")),
                ])
                .unwrap_or_else(|error| unreachable!("{error}")),
                limits: Limits {
                    generation_w_max: 0,
                    import_w_max: 5_000,
                    export_w_max: 5_000,
                    consumption_w_max: 5_000,
                    storage_w_max: 5_000,
                    storage_wh: 10_000,
                },
                cell: Cell::new("u33db").unwrap_or_else(|error| unreachable!("{error}")),
                commissioned_s: 1_767_225_600,
                maintenance_interval_s: 31_536_000,
                device: Default::default(),
            }),
        ),
    )];
    let asset = vectors[0].envelope.clone();
    // The street battery's round trip fell to 71 %; a neighbour reports on it, with her reading as evidence.
    let alert = Alert {
        asset: asset.id(),
        rule: AlertRule::Wear,
        measured: 712_000,
        threshold: 800_000,
        interval_start_s: 1_767_224_700,
    };
    vectors.push(vector("alert", 1, sign(1, 11, Body::Alert(alert))));
    let report = Report {
        asset: BoundedVec::new(vec![asset.id()]).unwrap_or_else(|error| unreachable!("{error}")),
        cell: Cell::new("u33db").unwrap_or_else(|error| unreachable!("{error}")),
        severity: Severity::Warning,
        text: text("The street battery hums loudly at night and its fan runs all day."),
        reading: BoundedVec::new(vec![reading]).unwrap_or_else(|error| unreachable!("{error}")),
    };
    vectors.push(vector("report", 2, sign(2, 4, Body::Report(report))));
    vectors
}

/// A compute job from its posting to its sampled openings, a dispute and a verdict.
fn job_vectors() -> Vec<Vector> {
    let vector = |name, author, envelope| Vector { name, author, envelope };
    let cell = || Cell::new("u33db").unwrap_or_else(|error| unreachable!("{error}"));
    let task = ComputeTask { seed: Id(*blake3::hash(b"kos vector task").as_bytes()), units: 8, rounds: 16, samples: 2 };
    let job = Job {
        kind: JobKind::Compute,
        title: text("Train the street's load forecaster"),
        text: text("8 units of the forecaster's hash task; results sampled twice."),
        needs: BoundedVec::new(vec![Need { resource: Resource::Compute, quantity: 8_000, hours: 3 }])
            .unwrap_or_else(|error| unreachable!("{error}")),
        skills: BoundedVec::new(vec![Skill::new("gpu").unwrap_or_else(|error| unreachable!("{error}"))])
            .unwrap_or_else(|error| unreachable!("{error}")),
        cell: Cell::new("").unwrap_or_else(|error| unreachable!("{error}")),
        radius_m: 0,
        token: TokenId::new("credit").unwrap_or_else(|error| unreachable!("{error}")),
        reward: 24_000,
        collateral: 5_000,
        slash_ppm: 500_000,
        tier: 0,
        guild: BoundedVec::default(),
        rule: AwardRule::BestScore,
        per_km: 0,
        evidence: Evidence::Compute(task),
        bids_until_ms: CREATED_MS + 600_000,
        deadline_ms: CREATED_MS + 14_400_000,
    };
    let posting = sign(1, 20, Body::Job(job));
    let job_id = posting.id();
    let bid = sign(
        2,
        20,
        Body::Bid(Bid {
            job: job_id,
            price: 21_000,
            start_ms: CREATED_MS + 660_000,
            collateral: 5_000,
            cell: cell(),
            distance_m: 0,
        }),
    );
    let award = sign(1, 21, Body::Award(Award { job: job_id, bid: bid.id() }));
    let levels = run_task(&task);
    let root = levels.last().and_then(|level| level.first()).copied().unwrap_or(Id([0; 32]));
    let result = sign(2, 21, Body::Deliver(Deliver { job: job_id, proof: Proof::Result(root) }));
    // The sample as a block at height 7 with time CREATED_MS + 720 000 fixes it.
    let openings: Vec<Opening> = sample_indices(&task, &job_id, &root, 7, CREATED_MS + 720_000)
        .into_iter()
        .map(|index| Opening {
            index,
            leaf: levels[0][index as usize],
            path: BoundedVec::new(merkle_path(&levels, index)).unwrap_or_else(|error| unreachable!("{error}")),
        })
        .collect();
    let openings = sign(
        2,
        22,
        Body::Deliver(Deliver {
            job: job_id,
            proof: Proof::Openings(BoundedVec::new(openings).unwrap_or_else(|error| unreachable!("{error}"))),
        }),
    );
    let dispute = sign(
        1,
        22,
        Body::Dispute(Dispute { job: job_id, text: text("The forecaster's output is garbage on real data.") }),
    );
    let verdict = sign(3, 1, Body::Verdict(Verdict { job: job_id, outcome: Outcome::Done }));
    vec![
        vector("job", 1, posting),
        vector("bid", 2, bid),
        vector("award", 1, award),
        vector("deliver-result", 2, result),
        vector("deliver-openings", 2, openings),
        vector("dispute", 1, dispute),
        vector("verdict", 3, verdict),
    ]
}

/// The public key of test author `n`.
pub fn public_key(author: u8) -> PublicKey {
    Keypair::from_seed(&seed(author)).public()
}

/// The id of a vector by name.
pub fn id(name: &str) -> Option<Id> {
    all().into_iter().find(|vector| vector.name == name).map(|vector| vector.envelope.id())
}

/// A case of the signature rule (PROTOCOL.md §3 and §12): a key, a digest and a signature, with the rule's verdict.
/// The crafted cases are what a standard signer never makes; they pin down the rule where Ed25519 verifiers
/// differ (cofactored or not, small-order points, `S ≥ ℓ`).
#[derive(Debug, Clone)]
pub struct SignatureCase {
    pub name: &'static str,
    pub key: PublicKey,
    pub digest: [u8; 32],
    pub signature: Signature,
    pub valid: bool,
}

impl SignatureCase {
    /// The case as the text block PROTOCOL.md shows (and its test parses).
    pub fn to_block(&self) -> String {
        let verdict = if self.valid { "valid" } else { "invalid" };
        format!(
            "signature-case: {}\npublic-key: {}\ndigest: {}\nsignature: {}\nverdict: {verdict}\n",
            self.name,
            self.key.to_hex(),
            hex::encode(self.digest),
            self.signature.to_hex()
        )
    }
}

/// ℓ, the order of the base point, little-endian.
const ELL: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// The signature cases: an honest signature, and signatures built from a known secret scalar `a` and nonce `r`
/// with a point `T` of order 8 mixed into R or the key.
pub fn signature_cases() -> Vec<SignatureCase> {
    use curve25519_dalek::constants::EIGHT_TORSION;
    use curve25519_dalek::edwards::EdwardsPoint;
    use curve25519_dalek::scalar::Scalar;
    use sha2::{Digest as _, Sha512};

    let scalar = |label: &str| Scalar::from_bytes_mod_order(*blake3::hash(label.as_bytes()).as_bytes());
    let digest = *blake3::hash(b"kos signature case digest").as_bytes();
    let (a, r) = (scalar("kos signature case secret"), scalar("kos signature case nonce"));
    let torsion = EIGHT_TORSION[1];
    // s = r + k·a for the given R and key encodings.
    let sign = |r_point: EdwardsPoint, r: Scalar, key_point: EdwardsPoint, a: Scalar, digest: &[u8; 32]| {
        let (r_bytes, key_bytes) = (r_point.compress().to_bytes(), key_point.compress().to_bytes());
        let hash = Sha512::new().chain_update(r_bytes).chain_update(key_bytes).chain_update(digest).finalize();
        let mut wide = [0u8; 64];
        wide.copy_from_slice(&hash);
        let s = r + Scalar::from_bytes_mod_order_wide(&wide) * a;
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&r_bytes);
        signature[32..].copy_from_slice(s.as_bytes());
        (PublicKey(key_bytes), Signature(signature))
    };
    let case = |name, (key, signature): (PublicKey, Signature), digest, valid| SignatureCase {
        name,
        key,
        digest,
        signature,
        valid,
    };
    let base = EdwardsPoint::mul_base;
    let honest = Keypair::from_seed(&seed(1));
    let honest_signature = honest.sign_digest(&digest);
    // S + ℓ: the same S modulo ℓ, not reduced.
    let mut unreduced = honest_signature;
    let mut carry = 0u16;
    for (byte, ell) in unreduced.0[32..].iter_mut().zip(ELL) {
        let sum = u16::from(*byte) + u16::from(ell) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    let other_digest = *blake3::hash(b"kos signature case other digest").as_bytes();
    vec![
        case("honest", (honest.public(), honest_signature), digest, true),
        case("wrong-digest", (honest.public(), honest_signature), other_digest, false),
        case("s-not-reduced", (honest.public(), unreduced), digest, false),
        case("mixed-order-r", sign(base(&r) + torsion, r, base(&a), a, &digest), digest, true),
        case("mixed-order-key", sign(base(&r), r, base(&a) + torsion, a, &digest), digest, true),
        case("small-order-r", sign(torsion, Scalar::ZERO, base(&a), a, &digest), digest, false),
        case("small-order-key", sign(base(&r), r, torsion, Scalar::ZERO, &digest), digest, false),
    ]
}

/// The public OCMF sample kos takes as its reference: a KEBA KCP30 charger's signed begin and end of a charge
/// (P-256, DER signature, hex). From S.A.F.E. e.V.'s Transparenzsoftware, `src/test/resources/xml/
/// test_ocmf_keba_kcp30.xml` (Apache-2.0, © S.A.F.E. e.V.).
pub const OCMF_KCP30: &str = concat!(
    r#"OCMF|{"FV":"1.0","GI":"KEBA_KCP30","GS":"17619300","GV":"2.8.5","PG":"T32","IS":false,"IL":"NONE","#,
    r#""IF":["RFID_NONE","OCPP_NONE","ISO15118_NONE","PLMN_NONE"],"IT":"NONE","ID":"","RD":[{"TM":"#,
    r#""2019-08-13T10:03:15,000+0000 I","TX":"B","EF":"","ST":"G","RV":0.2596,"RI":"1-b:1.8.0","RU":"kWh"},"#,
    r#"{"TM":"2019-08-13T10:03:36,000+0000 R","TX":"E","EF":"","ST":"G","RV":0.2597,"RI":"1-b:1.8.0","RU":"kWh"}]}|"#,
    r#"{"SD":"304502200E2F107C987A300AC1695CA89EA149A8CDFA16188AF0A33EE64B67964AA943F9022100889A72B6D65364BEA8"#,
    r#"562E7F6A0253157ACFF84FE4929A93B5964D23C4265699"}"#
);

/// The KCP30 charger's public key, as published (DER SubjectPublicKeyInfo, hex).
pub const OCMF_KCP30_KEY: &str = concat!(
    "3059301306072A8648CE3D020106082A8648CE3D030107034200043AEEB45C392357820A58FDFB0857BD77ADA31585C61C43",
    "0531DFA53B440AFBFDD95AC887C658EA55260F808F55CA948DF235C2108A0D6DC7D4AB1A5E1A7955BE"
);

/// A LEM DC meter's signed begin and end of a charge, with import (1.8.0) and export (2.8.0) registers and readings
/// that inherit fields from the one before. Same source: `VW_OCMF_load.xml` (Apache-2.0, © S.A.F.E. e.V.).
pub const OCMF_LEM: &str = concat!(
    r#"OCMF|{"FV":"1.0","GI":"LEM DCBM","GS":"1211751603","GV":"v1","PG":"T144","MV":"LEM","MS":"1211751603","#,
    r#""MF":"MU-0.1.4.0_SU-0.0.8.0","IS":true,"IL":"HEARSAY","IF":["RFID_RELATED","OCPP_AUTH_TLS","ISO15118_NONE","#,
    r#""PLMN_NONE"],"IT":"ISO14443","ID":"5EEFE0C7F64B050E9FB95C","CT":"EVSEID","CI":"458877","RD":[{"TM":"#,
    r#""2021-10-06T13:13:56,000+0200 R","TX":"B","RV":57.584,"RI":"1-0:1.8.0","RU":"kWh","RT":"DC","EF":"","ST":"G","#,
    r#""UC":{"UN":"No_Comp","UI":2,"UR":0}},{"RV":4.405,"RI":"1-0:2.8.0","RU":"kWh","ST":"G"},{"TM":"#,
    r#""2021-10-06T13:15:13,000+0200 R","TX":"E","RV":58.685,"RI":"1-0:1.8.0","RU":"kWh","ST":"G"},{"RV":4.405,"#,
    r#""RI":"1-0:2.8.0","RU":"kWh","ST":"G"}]}|{"SA":"ECDSA-secp256r1-SHA256","SD":"3045022100E1C80E7115294A3A4D10"#,
    r#"CFF8B94E959F941415E19A0913A0538312E585E1A37702200A2BE1B235C152CFC7555064A96533F192A8A1D4E0484C68FD46574947"#,
    r#"A3D9BA"}"#
);

/// The LEM meter's public key (DER SubjectPublicKeyInfo, hex).
pub const OCMF_LEM_KEY: &str = concat!(
    "3059301306072A8648CE3D020106082A8648CE3D03010703420004CE6FD2090A85FDE4A69B58EF00FDE362833AD8C70F8E80",
    "27CAAC655C0BB02F6B1A44558C78B386FF0BC3A4BBE6C81A4F8133134DB05DAE91E2AA309C07A5128B"
);

fn p256_key(text: &str) -> P256Key {
    P256Key::from_text(text).unwrap_or_else(|error| unreachable!("{error}"))
}

fn meter(name: &str) -> MeterId {
    MeterId::new(name).unwrap_or_else(|error| unreachable!("{error}"))
}

/// A reading of `meter` with these registers, unattested.
fn register_reading(
    meter_name: &str,
    interval_start_s: u64,
    import_counter_wh: u64,
    export_counter_wh: u64,
) -> Reading {
    Reading {
        meter: meter(meter_name),
        interval_start_s,
        interval_s: 900,
        import_wh: 0,
        export_wh: 0,
        generation_wh: 0,
        consumption_wh: 0,
        import_counter_wh,
        export_counter_wh,
        source: MeterSource::Mqtt,
        device: BoundedVec::default(),
    }
}

fn attested(reading: Reading, attestation: Attestation) -> Reading {
    Reading { device: BoundedVec::new(vec![attestation]).unwrap_or_else(|error| unreachable!("{error}")), ..reading }
}

/// The reading of vector `reading-device`, signed by device 9 and relayed by author 2.
fn device_signed_reading() -> Reading {
    let reading = Reading {
        meter: meter("home-2-meter"),
        interval_start_s: 1_767_224_700,
        interval_s: 900,
        import_wh: 0,
        export_wh: 412,
        generation_wh: 655,
        consumption_wh: 243,
        import_counter_wh: 1_204_331,
        export_counter_wh: 3_310_207,
        source: MeterSource::SunSpecModbus,
        device: BoundedVec::default(),
    };
    crate::message::attest(&network(), &public_key(2), reading, &Keypair::from_seed(&seed(9)))
}

/// A reading signed by a kos-native device, an OCMF charger's manifest and a reading its OCMF record attests.
fn device_vectors() -> Vec<Vector> {
    let vector = |name, author, envelope| Vector { name, author, envelope };
    let charger = Asset {
        kind: AssetKind::Meter,
        purpose: text("wallbox, KEBA KCP30"),
        owner: public_key(2),
        meters: BoundedVec::new(vec![meter("charger-1")]).unwrap_or_else(|error| unreachable!("{error}")),
        limits: Limits {
            generation_w_max: 0,
            import_w_max: 11_000,
            export_w_max: 0,
            consumption_w_max: 11_000,
            storage_w_max: 0,
            storage_wh: 0,
        },
        cell: Cell::new("u33db").unwrap_or_else(|error| unreachable!("{error}")),
        commissioned_s: 1_565_000_000,
        maintenance_interval_s: 0,
        device: BoundedVec::new(vec![DeviceKey::P256(p256_key(OCMF_KCP30_KEY))])
            .unwrap_or_else(|error| unreachable!("{error}")),
    };
    let record = OcmfRecord { key: p256_key(OCMF_KCP30_KEY), record: text(OCMF_KCP30) };
    let ocmf_reading = attested(register_reading("charger-1", 1_565_690_400, 259, 0), Attestation::Ocmf(record));
    vec![
        vector("reading-device", 2, sign(2, 5, Body::Reading(device_signed_reading()))),
        vector("asset-ocmf", 2, sign(2, 6, Body::Asset(charger))),
        vector("reading-ocmf", 2, sign(2, 7, Body::Reading(ocmf_reading))),
    ]
}

/// A case of the device rules (PROTOCOL.md §5, *Device-signed readings*): a reading, the attestation it carries and the verdict of the
/// stateless check.
#[derive(Debug, Clone)]
pub struct DeviceCase {
    pub name: &'static str,
    /// The account that relays the reading.
    pub author: PublicKey,
    pub reading: Reading,
    /// `None`: valid; otherwise why it is refused.
    pub refused: Option<String>,
}

impl DeviceCase {
    /// The case as the text block PROTOCOL.md shows (and its test parses).
    pub fn to_block(&self) -> String {
        let reading = &self.reading;
        let mut block = format!(
            "device-case: {}
network: {NETWORK}
author: {}
reading: {}
",
            self.name,
            self.author.to_hex(),
            hex::encode(crate::codec::encode(reading)),
        );
        match reading.device.as_slice().first() {
            Some(Attestation::Ed25519(signed)) => {
                let digest = device_reading_digest(&network(), &self.author, reading);
                let _ = writeln!(block, "device-key: {}", signed.key.to_hex());
                let _ = writeln!(block, "device-digest: {}", hex::encode(digest));
                let _ = writeln!(block, "device-signature: {}", signed.signature.to_hex());
            }
            Some(Attestation::Ocmf(record)) => {
                let _ = writeln!(block, "device-key: {}", record.key.to_hex());
                let _ = writeln!(block, "ocmf: {}", record.record.as_str());
                let _ = writeln!(
                    block,
                    "registers: import {} Wh, export {} Wh, interval {} + {} s",
                    reading.import_counter_wh, reading.export_counter_wh, reading.interval_start_s, reading.interval_s
                );
            }
            None => {}
        }
        let verdict = self.refused.as_deref().map_or_else(|| "valid".to_owned(), |why| format!("invalid ({why})"));
        let _ = writeln!(block, "verdict: {verdict}");
        block
    }
}

/// The device cases: a kos device's signature, the OCMF samples, and what each rule refuses.
pub fn device_cases() -> Vec<DeviceCase> {
    let author = public_key(2);
    let kcp30 = |record: &str, import_counter_wh, interval_start_s| {
        let record = OcmfRecord { key: p256_key(OCMF_KCP30_KEY), record: text(record) };
        attested(register_reading("charger-1", interval_start_s, import_counter_wh, 0), Attestation::Ocmf(record))
    };
    let lem = OcmfRecord { key: p256_key(OCMF_LEM_KEY), record: text(OCMF_LEM) };
    let device = device_signed_reading();
    let tampered_reading = Reading { export_wh: 512, ..device.clone() };
    let cases: Vec<(&'static str, PublicKey, Reading)> = vec![
        ("ed25519", author, device.clone()),
        ("ed25519-other-author", public_key(1), device),
        ("ed25519-reading-changed", author, tampered_reading),
        ("ocmf-kcp30", author, kcp30(OCMF_KCP30, 259, 1_565_690_400)),
        ("ocmf-kcp30-tampered", author, kcp30(&OCMF_KCP30.replacen("2019-08-13", "2019-08-12", 1), 259, 1_565_690_400)),
        ("ocmf-kcp30-other-register", author, kcp30(OCMF_KCP30, 260, 1_565_690_400)),
        ("ocmf-kcp30-other-interval", author, kcp30(OCMF_KCP30, 259, 1_565_691_300)),
        (
            "ocmf-kcp30-unsigned-export",
            author,
            Reading { export_wh: 500, export_counter_wh: 500, ..kcp30(OCMF_KCP30, 259, 1_565_690_400) },
        ),
        (
            "ocmf-lem",
            author,
            attested(register_reading("dc-meter", 1_633_518_900, 58_685, 4_405), Attestation::Ocmf(lem)),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, author, reading)| DeviceCase {
            name,
            author,
            refused: check_attestation(&network(), &author, &reading).err().map(|error| error.to_string()),
            reading,
        })
        .collect()
}
