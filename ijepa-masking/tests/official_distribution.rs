//! Our `official_compat` sampler against the official collator itself.
//!
//! `tests/fixtures/official_masks.json` holds what facebookresearch/ijepa's
//! `MaskCollator` produced with the paper's settings (400 batches of 128 on
//! 14×14 and 16×16 grids; made by `tests/fixtures/official_masks.py`). The
//! two samplers use different random generators, so we compare
//! distributions: per-batch lengths by their means (within 4 standard errors)
//! and ranges, and per-patch context/target frequencies.

use ijepa_masking::{Grid, MaskSampler, MultiBlock, MultiBlockConfig};
use serde_json::Value;

struct Measured {
    context_len: Vec<f64>,
    target_len: Vec<f64>,
    context_frequency: Vec<f64>,
    target_frequency: Vec<f64>,
}

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/official_masks.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture file is committed");
    serde_json::from_str(&text).expect("fixture is valid JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn official(grid: &Value) -> (Grid, Measured) {
    let dims = floats(&grid["grid"]);
    let g = Grid::new_2d(dims[0] as usize, dims[1] as usize).unwrap();
    let m = Measured {
        context_len: floats(&grid["context_len"]),
        target_len: floats(&grid["target_len"]),
        context_frequency: floats(&grid["context_frequency"]),
        target_frequency: floats(&grid["target_frequency"]),
    };
    (g, m)
}

fn ours(grid: Grid, official_compat: bool, batches: usize, batch: usize) -> Measured {
    let sampler = MultiBlock::new(
        grid,
        MultiBlockConfig {
            official_compat,
            seed: 2023,
            ..Default::default()
        },
    )
    .unwrap();
    let n = grid.num_patches();
    let mut m = Measured {
        context_len: vec![],
        target_len: vec![],
        context_frequency: vec![0.0; n],
        target_frequency: vec![0.0; n],
    };
    for b in 0..batches {
        let masks = sampler.sample(batch, b as u64);
        m.context_len.push(masks.contexts[0].len() as f64);
        m.target_len.push(masks.targets[0].len() as f64);
        for &i in masks.contexts[0].as_flat() {
            m.context_frequency[i as usize] += 1.0;
        }
        for t in &masks.targets {
            for &i in t.as_flat() {
                m.target_frequency[i as usize] += 1.0;
            }
        }
    }
    let images = (batches * batch) as f64;
    for f in m
        .context_frequency
        .iter_mut()
        .chain(&mut m.target_frequency)
    {
        *f /= images;
    }
    m
}

fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

/// |mean(a) − mean(b)| in standard errors of the difference.
fn z_score(a: &[f64], b: &[f64]) -> f64 {
    let (ma, va) = mean_var(a);
    let (mb, vb) = mean_var(b);
    (ma - mb).abs() / (va / a.len() as f64 + vb / b.len() as f64).sqrt()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn range(x: &[f64]) -> (f64, f64) {
    (
        x.iter().copied().fold(f64::INFINITY, f64::min),
        x.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

#[test]
fn compat_matches_the_official_collator() {
    let fx = fixture();
    for grid in fx["grids"].as_array().unwrap() {
        let (g, reference) = official(grid);
        let batches = reference.context_len.len();
        let batch = grid["batch"].as_u64().unwrap() as usize;
        // Four times the reference's batches: our side's noise is then small.
        let ours = ours(g, true, 4 * batches, batch);

        let (ref_mean, _) = mean_var(&reference.context_len);
        let (our_mean, _) = mean_var(&ours.context_len);
        let z = z_score(&ours.context_len, &reference.context_len);
        eprintln!("{g}: context mean {our_mean:.2} vs official {ref_mean:.2} (z = {z:.2})");
        assert!(z < 4.0, "{g}: context length mean {our_mean} vs {ref_mean}");

        let z = z_score(&ours.target_len, &reference.target_len);
        assert!(z < 4.0, "{g}: target length mean differs, z = {z}");
        assert_eq!(range(&ours.target_len), range(&reference.target_len), "{g}");

        // Per-patch frequencies: this is where the exclusive corner bound (last
        // row/column never covered) and the lowest-index truncation (top rows
        // favoured) show. Batch-level correlation makes each frequency's
        // standard error ≈ 0.01; 0.04 is four of them.
        let dc = max_abs_diff(&ours.context_frequency, &reference.context_frequency);
        let dt = max_abs_diff(&ours.target_frequency, &reference.target_frequency);
        eprintln!("{g}: max |Δ frequency| context {dc:.4}, targets {dt:.4}");
        assert!(dc < 0.04 && dt < 0.04, "{g}: context {dc}, targets {dt}");
    }
}

#[test]
fn design_figures_hold_on_14x14() {
    // The official collator at batch 128 on 14×14 keeps about 51 context
    // patches and draws target blocks of 30–40 (measured with its own code).
    let m = ours(Grid::new_2d(14, 14).unwrap(), true, 400, 128);
    let (mean, _) = mean_var(&m.context_len);
    assert!((49.0..53.0).contains(&mean), "mean context {mean}");
    assert_eq!(range(&m.target_len), (30.0, 40.0));
}

#[test]
fn default_fixes_the_official_biases() {
    let fx = fixture();
    let (g, reference) = official(&fx["grids"][0]);
    let m = ours(g, false, 400, 128);
    let last_row = |f: &[f64]| {
        (0..g.width())
            .map(|c| f[g.index(0, g.height() - 1, c) as usize])
            .sum::<f64>()
    };
    // The official collator never puts the last row in a context or target.
    assert_eq!(last_row(&reference.context_frequency), 0.0);
    assert_eq!(last_row(&reference.target_frequency), 0.0);
    assert!(last_row(&m.context_frequency) > 0.5);
    assert!(last_row(&m.target_frequency) > 0.5);
    // With unbiased truncation the context frequency is symmetric top/bottom;
    // the official one favours the top rows.
    let row_mean = |f: &[f64], r: usize| {
        (0..g.width())
            .map(|c| f[g.index(0, r, c) as usize])
            .sum::<f64>()
            / g.width() as f64
    };
    let h = g.height();
    let ours_skew = row_mean(&m.context_frequency, 1) - row_mean(&m.context_frequency, h - 2);
    let official_skew =
        row_mean(&reference.context_frequency, 1) - row_mean(&reference.context_frequency, h - 3);
    eprintln!(
        "top-minus-bottom context frequency: ours {ours_skew:.4}, official {official_skew:.4}"
    );
    assert!(ours_skew.abs() < 0.03, "{ours_skew}");
    assert!(official_skew > 0.05, "{official_skew}");
}
