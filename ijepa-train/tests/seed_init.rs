//! The seed recipe initialises as stable-pretraining's `IJEPA` does — as a
//! distribution: ijepa-rs draws from its own seeded streams, so moments are
//! compared, not values.
//!
//! `tests/fixtures/make_seed_init_moments.py` built `IJEPA(name,
//! predictor_embed_dim=192, predictor_depth=6)` (0.1.8) around
//! `vit_tiny_patch16_224`, `vit_small_patch14_reg4_dinov2` and
//! `vit_giant_patch14_dinov2` (fewer blocks, the giant narrower) and wrote each tensor's count, mean, standard deviation, excess kurtosis
//! and largest magnitude. Each tensor here must match: the same names and
//! counts; constants equal; otherwise the mean within 6 standard errors, the
//! standard deviation within 6 of its standard errors (relative `6/√n`), the
//! kurtosis within 0.5 (which tells uniform, −1.2, from normal, 0) and a
//! uniform draw's largest magnitude (its bound) within 1 %, where there are
//! at least 4,096 values.

use std::path::Path;

use candle_core::Device;
use ijepa_encoder::registry::{self, TimmArgs};
use ijepa_train::model::{IJepa, IJepaConfig, Recipe};
use serde_json::Value;

struct Moments {
    n: usize,
    mean: f64,
    std: f64,
    excess_kurtosis: f64,
    max_abs: f64,
}

fn moments(values: &[f32]) -> Moments {
    let n = values.len();
    let x: Vec<f64> = values.iter().map(|v| *v as f64).collect();
    let mean = x.iter().sum::<f64>() / n as f64;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
    let m4 = x.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n as f64;
    Moments {
        n,
        mean,
        std: var.sqrt(),
        excess_kurtosis: if var > 0.0 {
            m4 / var.powi(2) - 3.0
        } else {
            0.0
        },
        max_abs: x.iter().fold(0f64, |m, v| m.max(v.abs())),
    }
}

fn reference(m: &Value) -> Moments {
    let f = |k: &str| m[k].as_f64().unwrap();
    Moments {
        n: m["n"].as_u64().unwrap() as usize,
        mean: f("mean"),
        std: f("std"),
        excess_kurtosis: f("excess_kurtosis"),
        max_abs: f("max_abs"),
    }
}

fn init_matches_stable_pretraining(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed_init_moments.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let case = &doc["cases"][name];
    let args = TimmArgs {
        num_classes: Some(0),
        ..serde_json::from_value(case["model_args"].clone()).unwrap()
    };
    let mut cfg = IJepaConfig::new(registry::resolve(name, &args).unwrap().config);
    cfg.recipe = Recipe::Seed;
    cfg.predictor_embed_dim = doc["predictor_embed_dim"].as_u64().unwrap() as usize;
    cfg.predictor_depth = doc["predictor_depth"].as_u64().unwrap() as usize;
    cfg.seed = 7;
    let model = IJepa::new(cfg, &Device::Cpu).unwrap();

    let mut ours: Vec<(String, Vec<f32>)> = vec![];
    for (prefix, weights) in [
        ("encoder", model.student_weights().unwrap()),
        ("predictor", model.predictor_weights().unwrap()),
    ] {
        for (k, t) in weights {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            ours.push((format!("{prefix}.{k}"), v));
        }
    }
    let theirs = case["tensors"].as_object().unwrap();
    let mut names: Vec<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
    names.sort();
    let mut expected: Vec<&str> = theirs.keys().map(String::as_str).collect();
    expected.sort();
    assert_eq!(names, expected, "{name}: the tensors differ");

    let mut drawn = 0;
    for (key, values) in &ours {
        let a = moments(values);
        let b = reference(&theirs[key]);
        assert_eq!(a.n, b.n, "{name}: {key} count");
        let n = a.n as f64;
        if b.std == 0.0 {
            assert!(
                a.std == 0.0 && (a.mean - b.mean).abs() <= 1e-7 * b.mean.abs(),
                "{name}: {key} is the constant {} there, here mean {} std {}",
                b.mean,
                a.mean,
                a.std
            );
            continue;
        }
        drawn += 1;
        let se_mean = b.std * (2.0 / n).sqrt();
        assert!(
            (a.mean - b.mean).abs() <= 6.0 * se_mean,
            "{name}: {key} mean {} vs {} (±{se_mean:.2e})",
            a.mean,
            b.mean
        );
        assert!(
            (a.std / b.std - 1.0).abs() <= 6.0 / n.sqrt(),
            "{name}: {key} std {} vs {}",
            a.std,
            b.std
        );
        if a.n >= 4096 {
            assert!(
                (a.excess_kurtosis - b.excess_kurtosis).abs() <= 0.5,
                "{name}: {key} excess kurtosis {} vs {} (uniform −1.2, normal 0)",
                a.excess_kurtosis,
                b.excess_kurtosis
            );
        }
        // A uniform draw's bound shows in its largest magnitude (a normal
        // draw's largest is too noisy to compare).
        if a.n >= 4096 && b.excess_kurtosis < -1.0 {
            assert!(
                (a.max_abs / b.max_abs - 1.0).abs() <= 0.01,
                "{name}: {key} bound {} vs {}",
                a.max_abs,
                b.max_abs
            );
        }
    }
    eprintln!(
        "{name}: {} tensors, {drawn} drawn, all within bounds",
        ours.len()
    );
    assert!(drawn > 20, "{name}: only {drawn} random tensors compared");
}

#[test]
fn seed_init_of_a_class_token_vit_matches_stable_pretraining() {
    init_matches_stable_pretraining("vit_tiny_patch16_224");
}

#[test]
fn seed_init_of_a_register_vit_with_layer_scale_matches_stable_pretraining() {
    init_matches_stable_pretraining("vit_small_patch14_reg4_dinov2");
}

#[test]
fn seed_init_of_a_glu_vit_matches_stable_pretraining() {
    init_matches_stable_pretraining("vit_giant_patch14_dinov2");
}
