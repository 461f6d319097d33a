//! What the CLI's test files share: a tiny model's arguments and bit-exact
//! comparison of tensor files.
#![allow(dead_code)] // each test file uses its part

use std::path::Path;

use safetensors::SafeTensors;

/// `pretrain` arguments of a tiny encoder (the default model at 48 px: 12×12
/// patches of 4, width 32, 2 heads, 1 block) and predictor (width 16, 1
/// block). Later `--set`s override these.
pub const TINY_MODEL: &[&str] = &[
    "--set",
    "model.args.img_size=48",
    "--set",
    "model.args.embed_dim=32",
    "--set",
    "model.args.num_heads=2",
    "--set",
    "model.args.depth=1",
    "--set",
    "model.predictor_embed_dim=16",
    "--set",
    "model.predictor_depth=1",
];

/// `pretrain` arguments of a run that only starts from the timm_gap
/// fixture's weights (4 × 4 patches: blocks of one patch must be keepable)
/// and writes its step-0 checkpoint.
pub const INIT_RUN: &[&str] = &[
    "--set",
    "mask.min_keep=0",
    "--set",
    "data.synthetic_images=8",
    "--batch-size",
    "4",
    "--no-probe",
    "--max-steps",
    "0",
];

/// Calls `each(name, dtype, a's bytes, b's bytes)` for every tensor of two
/// safetensors files, after checking they hold the same names, dtypes and
/// shapes.
fn each_pair(a: &Path, b: &Path, mut each: impl FnMut(&str, safetensors::Dtype, &[u8], &[u8])) {
    let (a_bytes, b_bytes) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let (x, y) = (
        SafeTensors::deserialize(&a_bytes).unwrap(),
        SafeTensors::deserialize(&b_bytes).unwrap(),
    );
    let mut names = x.names();
    names.sort();
    let mut other = y.names();
    other.sort();
    assert_eq!(names, other, "{} vs {}", a.display(), b.display());
    for name in names {
        let (s, t) = (x.tensor(name).unwrap(), y.tensor(name).unwrap());
        assert_eq!(
            (s.dtype(), s.shape()),
            (t.dtype(), t.shape()),
            "{name} in {}",
            a.display()
        );
        each(name, s.dtype(), s.data(), t.data());
    }
}

/// Two safetensors files hold the same tensors, bit for bit: names, dtypes,
/// shapes and bytes.
pub fn assert_same_tensors(a: &Path, b: &Path) {
    each_pair(a, b, |name, _, s, t| {
        assert!(s == t, "{name} differs in {}", a.display());
    });
}

/// Two safetensors files of f32 tensors hold the same names and shapes and
/// values within `tolerance` of each tensor's largest magnitude; returns
/// the largest such relative deviation.
pub fn assert_close_tensors(a: &Path, b: &Path, tolerance: f32) -> f32 {
    let floats = |d: &[u8]| -> Vec<f32> {
        d.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let mut worst = 0f32;
    each_pair(a, b, |name, dtype, s, t| {
        assert_eq!(dtype, safetensors::Dtype::F32, "{name}");
        let (u, v) = (floats(s), floats(t));
        let scale = v
            .iter()
            .fold(0f32, |m, x| m.max(x.abs()))
            .max(f32::MIN_POSITIVE);
        let diff = u
            .iter()
            .zip(&v)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            diff <= tolerance * scale,
            "{name} differs by {diff:e} (scale {scale:e}) in {}",
            a.display()
        );
        worst = worst.max(diff / scale);
    });
    worst
}

/// The rows of a run's `metrics.csv` after its header, split at commas.
pub fn metrics(run: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(run.join("metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

/// Rows of a run's `metrics.csv` so far (0 while it does not exist): how
/// many steps a running job has logged.
pub fn metrics_rows(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.csv"))
        .map_or(0, |t| t.lines().count().saturating_sub(1))
}
