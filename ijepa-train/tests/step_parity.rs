//! One I-JEPA training step of the official recipe equal to a PyTorch
//! reference (the seed recipe is checked against stable-pretraining itself,
//! in `seed_parity.rs`).
//!
//! `tests/fixtures/make_step_fixture.py` (PyTorch 2.15 + timm 1.0.31 blocks)
//! wrote the weights, images and masks, and the reference loss, gradients,
//! AdamW step and EMA update. Tolerances (f32): loss 1e-5 relative, every
//! gradient 1e-4 max abs, weights after the step 1e-5 max abs.

use candle_core::{Device, Tensor, Var};
use ijepa_encoder::layout::to_varmap;
use ijepa_encoder::{VisionTransformer, VitConfig, WeightMap};
use ijepa_predictor::{Predictor, PredictorConfig};
use ijepa_train::ema::ema_update;
use ijepa_train::loss::objective;
use ijepa_train::optim::AdamW;

use crate::support;

// Continuing an official run, in this binary (one link for the parity tests).
#[path = "parity/official_run.rs"]
mod official_run;

fn encoder_config() -> VitConfig {
    let mut cfg = VitConfig::ijepa((32, 32), 8, 32, 2, 2, 128, 1e-6);
    cfg.fixed_pos_embed = true;
    cfg
}

fn vars(varmap: &candle_nn::VarMap) -> Vec<(String, Var)> {
    let mut v: Vec<_> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn step(recipe: &str, predictor_cfg: PredictorConfig) {
    let fx = support::fixture(&format!("step_{recipe}"));
    let cfg = encoder_config();
    let student_vars = to_varmap(&support::prefixed(&fx, "student.")).unwrap();
    let student = VisionTransformer::from_varmap(&cfg, &student_vars).unwrap();
    let mut teacher_weights = support::prefixed(&fx, "teacher.");
    let teacher = VisionTransformer::from_weights(&cfg, teacher_weights.clone()).unwrap();
    let predictor_vars = to_varmap(&support::prefixed(&fx, "predictor.")).unwrap();
    let predictor = Predictor::new(
        &predictor_cfg,
        candle_nn::VarBuilder::from_varmap(&predictor_vars, candle_core::DType::F32, &Device::Cpu),
    )
    .unwrap();
    let targets: Vec<Tensor> = (0..)
        .map_while(|t| fx.get(&format!("target_idx.{t}")).cloned())
        .map(|t| t.to_dtype(candle_core::DType::U32).unwrap())
        .collect();
    let context_idx = fx["context_idx"].to_dtype(candle_core::DType::U32).unwrap();

    let out = objective(
        &student,
        &teacher,
        &predictor,
        &fx["images"],
        &context_idx,
        &targets,
    )
    .unwrap();
    let loss: f32 = out.loss.to_scalar().unwrap();
    let reference: f32 = fx["loss"].get(0).unwrap().to_scalar().unwrap();
    eprintln!("{recipe}: loss {loss} vs {reference}");
    assert!(
        ((loss - reference) / reference).abs() < 1e-5,
        "{recipe}: loss {loss} vs {reference}"
    );
    assert!(
        !out.targets.track_op() && !out.teacher_tokens.track_op(),
        "the teacher must stay out of the graph"
    );

    let grads = out.loss.backward().unwrap();
    let mut worst = 0f32;
    for (who, varmap) in [("student", &student_vars), ("predictor", &predictor_vars)] {
        for (name, var) in vars(varmap) {
            let fixed = name == "pos_embed" || name == "predictor_pos_embed";
            let grad = grads.get(var.as_tensor());
            if fixed {
                assert!(
                    grad.is_none(),
                    "{recipe}: fixed table {name} got a gradient"
                );
                continue;
            }
            let grad = grad.unwrap_or_else(|| panic!("{recipe}: {who}.{name} got no gradient"));
            let g = grad.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(
                g.iter().any(|v| *v != 0.0),
                "{recipe}: {who}.{name} has an all-zero gradient"
            );
            let err = support::max_abs(grad, &fx[&format!("grad.{who}.{name}")]);
            worst = worst.max(err);
            assert!(
                err <= 1e-4,
                "{recipe}: gradient of {who}.{name} off by {err}"
            );
        }
    }
    eprintln!("{recipe}: worst gradient error {worst:.2e}");

    // One AdamW step (fixed tables excluded), then the EMA update.
    let trainable: Vec<(String, Var)> = vars(&student_vars)
        .into_iter()
        .chain(vars(&predictor_vars))
        .filter(|(n, _)| n != "pos_embed" && n != "predictor_pos_embed")
        .collect();
    let mut opt = AdamW::new(AdamW::ijepa_groups(trainable, 0.04), 1e-3);
    opt.step(&grads).unwrap();
    // Adam's first step moves each weight by ≈ lr·g/(|g| + eps): where the
    // true gradient is zero (the key bias of attention cannot change a
    // softmax) both sides hold rounding noise of ~1e-10 and the update is
    // noise too. Those elements are compared only for staying within lr of
    // where they were; every other element to 1e-5.
    let mut compared = 0;
    for (who, varmap) in [("student", &student_vars), ("predictor", &predictor_vars)] {
        for (name, var) in vars(varmap) {
            let ours = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let theirs = fx[&format!("after.{who}.{name}")]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let before = fx[&format!("{who}.{name}")]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let grad = match fx.get(&format!("grad.{who}.{name}")) {
                Some(g) => g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                None => vec![1.0; ours.len()], // fixed tables: must not move at all
            };
            for i in 0..ours.len() {
                if grad[i].abs() >= 1e-6 {
                    let err = (ours[i] - theirs[i]).abs();
                    assert!(
                        err <= 1e-5,
                        "{recipe}: {who}.{name}[{i}] after AdamW off by {err}"
                    );
                    compared += 1;
                } else {
                    assert!(
                        (ours[i] - before[i]).abs() <= 1.01e-3,
                        "{recipe}: {who}.{name}[{i}] moved too far"
                    );
                }
            }
        }
    }
    assert!(
        compared > 1000,
        "{recipe}: only {compared} elements compared"
    );
    let student_after: WeightMap = vars(&student_vars)
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    ema_update(&mut teacher_weights, &student_after, 0.996).unwrap();
    for (name, t) in &teacher_weights {
        let err = support::max_abs(t, &fx[&format!("after.teacher.{name}")]);
        assert!(
            err <= 1e-6,
            "{recipe}: teacher {name} after EMA off by {err}"
        );
    }
}

#[test]
fn official_step_equals_pytorch() {
    step(
        "official",
        PredictorConfig::official(&encoder_config(), 16, 2),
    );
}
