//! Codec and signature throughput for offers: encode+sign, decode+validate (single and batch).
//! Run: `cargo bench -p protocol --bench codec`; figures go to BENCHMARKS.md.
#![allow(clippy::unwrap_used)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use protocol::message::{Body, Offer, Side};
use protocol::{Config, Draft, Keypair, NetworkId, validate, validate_batch};

const NOW_MS: u64 = 1_800_000_000_000;

fn draft(nonce: u64) -> Draft {
    Draft {
        network: NetworkId::new("kos-bench").unwrap(),
        nonce,
        created_ms: NOW_MS,
        expires_ms: NOW_MS + 900_000,
        body: Body::Offer(Offer {
            pool: "energy/credit/u33db/900".parse().unwrap(),
            side: Side::Ask,
            quantity: 1_500,
            unit_price: 240,
            delivery_start_s: 1_800_000_900,
        }),
    }
}

fn offers(count: u64) -> Vec<Vec<u8>> {
    (0..count).map(|i| draft(i).sign(&Keypair::from_seed(&[(i % 251) as u8; 32])).to_bytes()).collect()
}

fn bench(c: &mut Criterion) {
    let keypair = Keypair::from_seed(&[1; 32]);
    let config = Config::new(NetworkId::new("kos-bench").unwrap());
    let mut group = c.benchmark_group("offer");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode+sign", |b| {
        b.iter_batched(|| draft(7), |draft| draft.sign(&keypair).to_bytes(), BatchSize::SmallInput)
    });
    let one = offers(1).remove(0);
    group.bench_function("decode only", |b| b.iter(|| protocol::Envelope::from_bytes(&one).unwrap()));
    group.bench_function("decode+validate", |b| b.iter(|| validate(&one, &config, NOW_MS).unwrap()));
    for size in [64u64, 256] {
        let messages = offers(size);
        let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        group.throughput(Throughput::Elements(size));
        group.bench_function(format!("decode+validate batch {size}"), |b| {
            b.iter(|| {
                let results = validate_batch(&slices, &config, NOW_MS);
                assert!(results.iter().all(Result::is_ok));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
