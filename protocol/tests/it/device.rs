//! Device-signed readings (PROTOCOL.md §5, *Device-signed readings*): a kos device's ed25519 signature, OCMF records from real chargers (the
//! public samples of S.A.F.E. e.V.'s Transparenzsoftware), and the gossip door's refusal of a bad one.

use protocol::message::{Attestation, BindingError, DeviceKey, OcmfRecord, Reading, check_attestation, check_binding};
use protocol::types::{BoundedVec, NetworkId, P256Key};
use protocol::{Body, Config, Draft, Keypair, validate, vectors};

fn verdicts() -> Vec<(&'static str, Option<String>)> {
    vectors::device_cases().into_iter().map(|case| (case.name, case.refused)).collect()
}

#[test]
fn every_device_case_gets_the_verdict_its_rule_gives() {
    let verdicts = verdicts();
    let refused = |name: &str| verdicts.iter().find(|(case, _)| *case == name).unwrap().1.clone();
    assert_eq!(refused("ed25519"), None);
    assert_eq!(refused("ed25519-other-author").as_deref(), Some("the device signature does not verify"));
    assert_eq!(refused("ed25519-reading-changed").as_deref(), Some("the device signature does not verify"));
    assert_eq!(refused("ocmf-kcp30"), None, "the public KEBA KCP30 sample verifies");
    assert_eq!(
        refused("ocmf-kcp30-tampered").as_deref(),
        Some("OCMF: the signature does not verify over the payload"),
        "the sample with its first time changed does not"
    );
    assert_eq!(
        refused("ocmf-kcp30-other-register").as_deref(),
        Some("the device signed import 259 Wh, the reading claims 260 Wh")
    );
    assert!(refused("ocmf-kcp30-other-interval").unwrap().contains("outside the reading's interval"));
    assert_eq!(
        refused("ocmf-kcp30-unsigned-export").as_deref(),
        Some("the reading claims 500 Wh of export, a register the OCMF record does not sign"),
        "a charger's record signs import only: no export may ride on it"
    );
    assert_eq!(refused("ocmf-lem"), None, "a DC meter's import and export registers, fields inherited");
}

#[test]
fn ocmf_samples_verify_and_tampered_ones_do_not() {
    let key = P256Key::from_text(vectors::OCMF_KCP30_KEY).unwrap();
    let record = protocol::ocmf::parse(vectors::OCMF_KCP30).unwrap();
    protocol::ocmf::verify(&record, &key).unwrap();
    assert_eq!(record.payload.len(), 391);
    // A value written differently (the same number) is another text: it does not verify.
    for (from, to) in [("0.2597", "0.25970"), ("0.2597", "0.2598"), ("\"PG\":\"T32\"", "\"PG\":\"T33\"")] {
        let tampered = vectors::OCMF_KCP30.replacen(from, to, 1);
        let record = protocol::ocmf::parse(&tampered).unwrap();
        assert_eq!(protocol::ocmf::verify(&record, &key), Err(protocol::ocmf::OcmfError::BadSignature), "{to}");
    }
    // Another device's key does not verify it either.
    let other = P256Key::from_text(vectors::OCMF_LEM_KEY).unwrap();
    assert!(protocol::ocmf::verify(&record, &other).is_err());
    let registers = protocol::ocmf::registers(protocol::ocmf::parse(vectors::OCMF_LEM).unwrap().payload).unwrap();
    assert_eq!(registers.import.unwrap().wh, 58_685);
    assert_eq!(registers.export.unwrap().wh, 4_405);
    assert_eq!(registers.export.unwrap().time_s, 1_633_518_913, "reading 4 takes its time from reading 3");
}

#[test]
fn ocmf_records_kos_does_not_read_are_refused_with_the_reason() {
    let cases = [
        ("OCMF|{}", "three sections"),
        ("XYZ|{}|{\"SD\":\"00\"}", "\"OCMF\""),
        (r#"OCMF|{"RD":[]}|{"SA":"ECDSA-brainpool256r1-SHA256","SD":"00"}"#, "unsupported signature algorithm"),
        (r#"OCMF|{"RD":[]}|{"SE":"base32","SD":"00"}"#, "unsupported signature encoding"),
        (r#"OCMF|{"RD":[]}|{"SD":"zz"}"#, "malformed hex signature"),
        (r#"OCMF|{"RD":[]}|{"XX":1,"SD":"00"}"#, "signature section"),
    ];
    for (text, expected) in cases {
        let error = protocol::ocmf::parse(text).unwrap_err().to_string();
        assert!(error.contains(expected), "{text}: {error}");
    }
    // A payload whose registers cannot be read.
    let payload = r#"{"RD":[{"TM":"2019-08-13T10:03:15,000+0000 S","ST":"G","RV":-1,"RI":"1-0:1.8.0","RU":"kWh"}]}"#;
    assert!(protocol::ocmf::registers(payload).unwrap_err().to_string().contains("negative"));
    let payload = r#"{"RD":[{"TM":"2019-08-13T10:03:15,000+0000 S","ST":"G","RV":1,"RI":"1-0:1.8.0","RU":"MWh"}]}"#;
    assert!(protocol::ocmf::registers(payload).unwrap_err().to_string().contains("unit"));
    // Readings in error or of other registers attest nothing.
    let payload = r#"{"RD":[{"TM":"2019-08-13T10:03:15,000+0000 S","ST":"G","EF":"E","RV":1,"RI":"1-0:1.8.0","RU":"Wh"},
        {"ST":"M","EF":"","RV":2},{"ST":"G","RV":3,"RI":"1-0:1.8.1"}]}"#;
    assert_eq!(protocol::ocmf::registers(payload).unwrap(), protocol::ocmf::Registers::default());
}

#[test]
fn device_keys_read_in_every_published_form() {
    let spki = P256Key::from_text(vectors::OCMF_KCP30_KEY).unwrap();
    let sec1 = hex::encode(spki.as_bytes());
    assert_eq!(P256Key::from_text(&sec1).unwrap(), spki);
    assert_eq!(P256Key::from_text(&sec1[2..]).unwrap(), spki, "X || Y");
    let spaced: String = vectors::OCMF_KCP30_KEY
        .chars()
        .enumerate()
        .flat_map(|(i, c)| if i % 2 == 0 && i > 0 { vec![' ', c] } else { vec![c] })
        .collect();
    assert_eq!(P256Key::from_text(&spaced).unwrap(), spki);
    assert!(P256Key::from_text("04").is_err());
    let text = format!("p256:{}", vectors::OCMF_KCP30_KEY);
    let key = DeviceKey::from_text(&text).unwrap();
    assert_eq!(DeviceKey::from_text(&key.to_string()).unwrap(), key, "Display reads back");
    assert!(DeviceKey::from_text("rsa:00").unwrap_err().contains("want ed25519"));
}

fn network() -> NetworkId {
    NetworkId::new(vectors::NETWORK).unwrap()
}

fn case_reading(name: &str) -> Reading {
    vectors::device_cases().into_iter().find(|case| case.name == name).unwrap().reading
}

#[test]
fn the_gossip_door_refuses_a_reading_whose_device_signature_fails() {
    let author = Keypair::from_seed(&vectors::seed(2));
    let config = Config::new(network());
    let envelope = |reading: Reading| {
        Draft {
            network: network(),
            nonce: 1,
            created_ms: vectors::CREATED_MS,
            expires_ms: vectors::CREATED_MS + 60_000,
            body: Body::Reading(reading),
        }
        .sign(&author)
        .to_bytes()
    };
    validate(&envelope(case_reading("ed25519")), &config, vectors::CREATED_MS).unwrap();
    validate(&envelope(case_reading("ocmf-kcp30")), &config, vectors::CREATED_MS).unwrap();
    for name in ["ed25519-reading-changed", "ocmf-kcp30-tampered", "ocmf-kcp30-other-register"] {
        let error = validate(&envelope(case_reading(name)), &config, vectors::CREATED_MS).unwrap_err();
        assert!(error.to_string().contains("device attestation"), "{name}: {error}");
    }
    // Signed by another node, the device's signature is not this author's to relay.
    let other = Keypair::from_seed(&vectors::seed(1));
    let stolen = Draft {
        network: network(),
        nonce: 1,
        created_ms: vectors::CREATED_MS,
        expires_ms: vectors::CREATED_MS + 60_000,
        body: Body::Reading(case_reading("ed25519")),
    }
    .sign(&other);
    assert!(validate(&stolen.to_bytes(), &config, vectors::CREATED_MS).is_err());
    // On another network, the same device signature does not verify.
    let elsewhere = NetworkId::new("kos-elsewhere").unwrap();
    let moved = Draft {
        network: elsewhere.clone(),
        nonce: 1,
        created_ms: vectors::CREATED_MS,
        expires_ms: vectors::CREATED_MS + 60_000,
        body: Body::Reading(case_reading("ed25519")),
    }
    .sign(&author);
    assert!(validate(&moved.to_bytes(), &Config::new(elsewhere), vectors::CREATED_MS).is_err());
}

#[test]
fn a_meter_takes_only_readings_of_the_device_its_asset_names() {
    let device = case_reading("ed25519");
    let named = device.device.as_slice()[0].key();
    let plain = Reading { device: BoundedVec::default(), ..device.clone() };
    let charger = case_reading("ocmf-kcp30");
    assert_eq!(check_binding(None, &plain), Ok(()));
    assert_eq!(check_binding(Some(&named), &device), Ok(()));
    assert!(matches!(check_binding(Some(&named), &plain), Err(BindingError::Unattested { .. })));
    assert!(matches!(check_binding(Some(&named), &charger), Err(BindingError::WrongKey { named: Some(_), .. })));
    assert!(matches!(check_binding(None, &device), Err(BindingError::WrongKey { named: None, .. })));
    // A record the device signed but over a key the reading swaps: the signature fails with the swapped key.
    let Attestation::Ocmf(record) = &charger.device.as_slice()[0] else { panic!() };
    let swapped = OcmfRecord { key: P256Key::from_text(vectors::OCMF_LEM_KEY).unwrap(), record: record.record.clone() };
    let swapped = Reading { device: BoundedVec::new(vec![Attestation::Ocmf(swapped)]).unwrap(), ..charger.clone() };
    assert!(check_attestation(&network(), &vectors::public_key(2), &swapped).is_err());
}

/// A charger's OCMF record becomes the reading its node relays: the registers it signs are the counters, the
/// interval the one its last register was read in, the flows their growth since the meter's last reading.
#[test]
fn an_ocmf_record_becomes_the_reading_its_node_relays() {
    use protocol::message::{Counters, OcmfReadingError, ocmf_reading};
    let key = P256Key::from_text(vectors::OCMF_KCP30_KEY).unwrap();
    let meter = protocol::types::MeterId::new("charger-1").unwrap();
    let author = Keypair::from_seed(&[2; 32]).public();
    let relay = |previous| ocmf_reading(meter.clone(), key, vectors::OCMF_KCP30, 900, previous);
    // The sample's end was read at 2019-08-13 10:03:36: the interval from 10:00; 0.2597 kWh is 259 Wh.
    let first = relay(None).unwrap();
    assert_eq!((first.interval_start_s, first.interval_s), (1_565_690_400, 900));
    assert_eq!((first.import_counter_wh, first.export_counter_wh, first.import_wh, first.export_wh), (259, 0, 0, 0));
    assert_eq!(check_attestation(&network(), &author, &first), Ok(()));
    // After a reading of the meter at 200 Wh: 59 Wh imported (and consumed), none exported.
    let previous = Counters { interval_start_s: 1_565_689_500, import_counter_wh: 200, export_counter_wh: 0 };
    let next = relay(Some(previous)).unwrap();
    assert_eq!((next.import_wh, next.consumption_wh, next.export_wh, next.generation_wh), (59, 59, 0, 0));
    assert_eq!(check_attestation(&network(), &author, &next), Ok(()));
    // After a reading two intervals back, nobody knows when the energy flowed: the counters move, nothing flows.
    let earlier = Counters { interval_start_s: 1_565_688_600, ..previous };
    let gap = relay(Some(earlier)).unwrap();
    assert_eq!((gap.import_counter_wh, gap.import_wh, gap.consumption_wh), (259, 0, 0));
    assert_eq!(check_attestation(&network(), &author, &gap), Ok(()));
    // Read 16 s after an interval's end (L = 200 s): the interval already over takes it — unless the meter's last
    // reading is of that one, then the next.
    let short = ocmf_reading(meter.clone(), key, vectors::OCMF_KCP30, 200, None).unwrap();
    assert_eq!(short.interval_start_s, 1_565_690_400);
    assert_eq!(check_attestation(&network(), &author, &short), Ok(()));
    let last = Counters { interval_start_s: 1_565_690_400, import_counter_wh: 250, export_counter_wh: 0 };
    let next_short = ocmf_reading(meter.clone(), key, vectors::OCMF_KCP30, 200, Some(last)).unwrap();
    assert_eq!((next_short.interval_start_s, next_short.import_wh), (1_565_690_600, 9));
    assert_eq!(check_attestation(&network(), &author, &next_short), Ok(()));
    // What cannot be relayed says why.
    let ahead = Counters { import_counter_wh: 300, ..previous };
    assert!(matches!(relay(Some(ahead)), Err(OcmfReadingError::Backwards { register: "import", .. })));
    let same = Counters { interval_start_s: 1_565_690_400, ..previous };
    assert!(matches!(relay(Some(same)), Err(OcmfReadingError::NotNewer { .. })));
    let other = P256Key::from_text(vectors::OCMF_LEM_KEY).unwrap();
    let wrong = ocmf_reading(meter.clone(), other, vectors::OCMF_KCP30, 900, None).unwrap_err();
    assert_eq!(wrong.to_string(), "the OCMF record: OCMF: the signature does not verify over the payload");
    assert_eq!(ocmf_reading(meter.clone(), key, vectors::OCMF_KCP30, 0, None), Err(OcmfReadingError::NoInterval));
    // A DC meter's record signs both registers, read in one interval.
    let lem = P256Key::from_text(vectors::OCMF_LEM_KEY).unwrap();
    let reading = ocmf_reading(meter, lem, vectors::OCMF_LEM, 900, None).unwrap();
    assert_eq!((reading.import_counter_wh, reading.export_counter_wh), (58_685, 4_405));
    assert_eq!(check_attestation(&network(), &author, &reading), Ok(()));
}
