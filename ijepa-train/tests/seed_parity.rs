//! The seed recipe's step equals stable-pretraining's own `IJEPA`.
//!
//! `tests/fixtures/make_seed_fixture.py` ran `stable_pretraining.methods.IJEPA`
//! (0.1.8) on two shrunken timm ViTs (32 px, patch 8, width 32, depth 2, two
//! heads; predictor width 32, depth 2): `vit_tiny_patch16_224` (a class token
//! with a position) and `vit_small_patch14_reg4_dinov2` (a class token and
//! four registers without positions, LayerScale). It recorded the masks its
//! `IJEPAMasking` drew, the loss, predictions, targets, embedding, every
//! gradient, and the teacher after an SGD step of the student and one
//! `update_teacher`. Here the same weights, images and masks go through
//! ijepa-rs's seed recipe, built from the same timm names and arguments.
//! Tolerances (f32): loss 1e-5 relative; predictions, targets, embedding and
//! every gradient 1e-4 max abs; the teacher after the update 1e-6.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use ijepa_encoder::registry::{self, Size, TimmArgs};
use ijepa_train::model::{EmbeddingSource, IJepa, IJepaConfig, Recipe};
use ijepa_train::run::init::InitWeights;

use crate::support;

/// The configuration of the fixture's run, as a user writes it: the timm
/// name and `timm.create_model`'s arguments, the seed recipe.
fn config(name: &str, img_size: usize, patch_size: usize, num_heads: usize) -> IJepaConfig {
    let args = TimmArgs {
        img_size: Some(Size::Square(img_size)),
        patch_size: Some(Size::Square(patch_size)),
        embed_dim: Some(32),
        depth: Some(2),
        num_heads: Some(num_heads),
        num_classes: Some(0),
        ..TimmArgs::default()
    };
    let encoder = registry::resolve(name, &args).unwrap().config;
    let mut cfg = IJepaConfig::new(encoder);
    cfg.recipe = Recipe::Seed;
    cfg.predictor_embed_dim = 32;
    cfg.predictor_depth = 2;
    cfg
}

fn step_equals_stable_pretraining(case: &str, name: &str) {
    let fx = support::fixture(&format!("seed_{case}"));
    let cfg = config(name, 32, 8, 2);
    let model = IJepa::from_parts(
        cfg,
        support::prefixed(&fx, "student."),
        support::prefixed(&fx, "teacher."),
        support::prefixed(&fx, "predictor."),
    )
    .unwrap();
    check_step(case, &fx, model);
}

/// `model`'s step on the fixture's images and masks against what `IJEPA`
/// recorded in `fx` (and its EMA update where the fixture has it).
fn check_step(case: &str, fx: &HashMap<String, Tensor>, mut model: IJepa) {
    let cfg = model.config().clone();

    // The predictor's fixed table is ours, not read from the fixture: it
    // must equal IJEPA's `get_sincos_pos_embed` buffer.
    let ours = ijepa_predictor::init_weights(
        &cfg.clone().checked().unwrap().predictor(),
        &cfg.predictor_init(),
        &Device::Cpu,
    )
    .unwrap();
    let table = support::max_abs(
        &ours["predictor_pos_embed"],
        &fx["predictor.predictor_pos_embed"],
    );
    assert!(table <= 1e-6, "{case}: predictor table off by {table}");

    assert!(
        !model.config().encoder.fixed_pos_embed,
        "the seed's position table is learned"
    );
    let context = fx["context_idx"].to_dtype(DType::U32).unwrap();
    let target = fx["target_idx"].to_dtype(DType::U32).unwrap();
    let out = model
        .forward_with_masks(
            &fx["images"],
            &context,
            std::slice::from_ref(&target),
            EmbeddingSource::Teacher,
        )
        .unwrap();

    let mut errors = vec![];
    for (what, t) in [
        ("predictions", &out.predictions),
        ("targets", &out.targets),
        ("embedding", &out.embedding),
    ] {
        let err = support::max_abs(t, &fx[what]);
        eprintln!("{case}: {what} {:?} off by {err:.2e}", t.dims());
        errors.push((what, err));
    }
    for (what, err) in errors {
        assert!(err <= 1e-4, "{case}: {what} off by {err}");
    }
    let loss: f32 = out.loss.to_scalar().unwrap();
    let reference: f32 = fx["loss"].get(0).unwrap().to_scalar().unwrap();
    eprintln!("{case}: loss {loss} vs {reference}");
    assert!(
        ((loss - reference) / reference).abs() < 1e-5,
        "{case}: loss {loss} vs {reference}"
    );

    // Every gradient, both ways: what IJEPA trains, ijepa-rs trains.
    let grads = out.loss.backward().unwrap();
    let trainable = model.trainable_vars();
    let mut worst = 0f32;
    for (name, var) in &trainable {
        let key = match name.split_once('.') {
            Some(("encoder", rest)) => format!("grad.student.{rest}"),
            Some(("predictor", rest)) => format!("grad.predictor.{rest}"),
            _ => panic!("{case}: unexpected variable {name}"),
        };
        let theirs = fx
            .get(&key)
            .unwrap_or_else(|| panic!("{case}: {name} is trained here but got no gradient there"));
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{case}: {name} got no gradient"));
        let err = support::max_abs(grad, theirs);
        worst = worst.max(err);
        assert!(err <= 1e-4, "{case}: gradient of {name} off by {err}");
    }
    let theirs = fx.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(
        trainable.len(),
        theirs,
        "{case}: IJEPA trains {theirs} tensors, ijepa-rs {}",
        trainable.len()
    );
    assert!(trainable.iter().any(|(n, _)| n == "encoder.pos_embed"));
    for token in ["cls_token", "reg_token"] {
        assert!(
            !fx.contains_key(&format!("grad.student.{token}")),
            "{case}: IJEPA never encodes its {token}"
        );
    }
    // IJEPA's query projection sees only zeros it then replaces by the mask
    // token: ijepa-rs does not build it, and nothing is lost.
    for k in ["weight", "bias"] {
        if let Some(g) = fx.get(&format!("grad_query_proj.{k}")) {
            assert_eq!(
                support::abs_max(g),
                0.0,
                "{case}: query_proj.{k} has a gradient"
            );
        }
    }
    eprintln!(
        "{case}: {} gradients, worst error {worst:.2e}",
        trainable.len()
    );

    // One SGD step of the student, then the EMA: the learned position table
    // and the tokens move with the rest.
    for (_, var) in trainable.iter().filter(|(n, _)| n.starts_with("encoder.")) {
        let g = grads.get(var.as_tensor()).unwrap();
        var.set(&(var.as_tensor() - (g * 0.1).unwrap()).unwrap())
            .unwrap();
    }
    let after = support::prefixed(fx, "after.teacher.");
    if after.is_empty() {
        return;
    }
    model.update_teacher(0.996).unwrap();
    let teacher = model.teacher_weights();
    assert_eq!(teacher.len(), after.len(), "{case}: teacher tensors");
    for (name, t) in &after {
        let err = support::max_abs(&teacher[name], t);
        assert!(err <= 1e-6, "{case}: teacher {name} after EMA off by {err}");
    }
}

#[test]
fn seed_step_with_a_class_token_equals_stable_pretraining() {
    step_equals_stable_pretraining("cls", "vit_tiny_patch16_224");
}

#[test]
fn seed_step_with_registers_and_layer_scale_equals_stable_pretraining() {
    step_equals_stable_pretraining("reg", "vit_small_patch14_reg4_dinov2");
}

/// `pretrain --init` from a timm folder under the seed recipe: the seed's
/// `IJEPA(model, pretrained=True)` step from the same weights
/// (`tests/fixtures/make_seed_pretrained.py`: the timm_gap fixture read by
/// timm as a hub download; IJEPA's rescale of pretrained output projections
/// undone there, as ijepa-rs keeps the weights as they are and says so).
#[test]
fn seed_step_from_pretrained_timm_weights_equals_stable_pretraining() {
    let fx = support::fixture("seed_pretrained");
    let weights =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ijepa-encoder/tests/fixtures/timm_gap");
    let init = InitWeights::load(&weights.display().to_string(), None, &Device::Cpu).unwrap();
    let args = TimmArgs {
        img_size: Some(Size::Square(56)),
        embed_dim: Some(48),
        depth: Some(2),
        num_heads: Some(3),
        num_classes: Some(0),
        ..TimmArgs::default()
    };
    let mut cfg = IJepaConfig::new(
        registry::resolve("vit_huge_patch14_gap_224", &args)
            .unwrap()
            .config,
    );
    cfg.recipe = Recipe::Seed;
    cfg.predictor_embed_dim = 32;
    cfg.predictor_depth = 2;
    let encoder = cfg.clone().checked().unwrap().encoder;
    init.check(&encoder).unwrap();
    // What --init builds: the file's encoder as student and teacher …
    let built = init.clone().into_model(cfg.clone()).unwrap();
    let student = built.student_weights().unwrap();
    for (name, t) in &init.student {
        for (which, w) in [("student", &student), ("teacher", built.teacher_weights())] {
            assert_eq!(support::max_abs(&w[name], t), 0.0, "{which} {name}");
        }
    }
    // … with IJEPA's own predictor draw in place of ours.
    let model = IJepa::from_parts(
        cfg,
        init.student.clone(),
        init.student,
        support::prefixed(&fx, "predictor."),
    )
    .unwrap();
    check_step("pretrained", &fx, model);
}
