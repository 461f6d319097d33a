//! Throughput of the official multi-block collator: 14×14 grid, batch 128,
//! 4 targets + 1 context, one thread. Reported per mask set (one image's
//! targets and context).
//!
//! `cargo bench -p ijepa-masking --bench multiblock`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ijepa_masking::{
    Grid, MaskSampler, MultiBlock, MultiBlockConfig, SeedMasking, SeedMaskingConfig,
};

const BATCH: usize = 128;

fn collators(c: &mut Criterion) {
    let grid = Grid::new_2d(14, 14).expect("valid grid");
    let mut group = c.benchmark_group("masks_14x14_b128");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, official_compat) in [("official", false), ("official_compat", true)] {
        let config = MultiBlockConfig {
            official_compat,
            ..MultiBlockConfig::default()
        };
        let sampler = MultiBlock::new(grid, config).expect("default config is valid");
        let mut batch = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                batch += 1;
                black_box(sampler.sample(BATCH, batch))
            })
        });
    }
    let seed =
        SeedMasking::new(grid, SeedMaskingConfig::default()).expect("default config is valid");
    let mut batch = 0u64;
    group.bench_function("seed", |b| {
        b.iter(|| {
            batch += 1;
            black_box(seed.sample(BATCH, batch))
        })
    });
    group.finish();
}

criterion_group!(benches, collators);
criterion_main!(benches);
