//! The I-JEPA model end to end on a tiny ViT: gradients reach every
//! trainable variable and never the teacher; eval mode; EMA; determinism.

use candle_core::{Device, Tensor};
use ijepa_encoder::TokenEncoder;
use ijepa_train::model::{EmbeddingSource, IJepa, IJepaConfig, Recipe};
use ijepa_train::optim::AdamW;

fn config(recipe: Recipe) -> IJepaConfig {
    let mut cfg = IJepaConfig::new(
        ijepa_encoder::registry::resolve(
            "vit_tiny_patch16_224",
            &ijepa_encoder::registry::TimmArgs::gap(),
        )
        .unwrap()
        .config,
    );
    cfg.encoder.image_size = (64, 64);
    cfg.encoder.depth = 2;
    cfg.encoder.embed_dim = 48;
    cfg.encoder.mlp_hidden_dim = 192;
    cfg.predictor_embed_dim = 96;
    cfg.predictor_depth = 2;
    cfg.mask.target_scale = (0.15, 0.25); // 4×4 grid: blocks of 2–4 patches
    cfg.recipe = recipe;
    cfg.seed = 5;
    cfg
}

fn images() -> Tensor {
    Tensor::randn(0f32, 1.0, (3, 3, 64, 64), &Device::Cpu).unwrap()
}

fn relaxed(recipe: Recipe) -> IJepaConfig {
    // The official masks need blocks of more than min_keep = 10 patches:
    // a 14×14 grid, as at 224 px.
    let mut cfg = config(recipe);
    if recipe == Recipe::Official {
        cfg.encoder.image_size = (224, 224);
        cfg.mask.target_scale = (0.15, 0.2);
    }
    cfg
}

#[test]
fn every_trainable_variable_gets_a_gradient_and_the_teacher_none() {
    #[derive(Clone, Copy, PartialEq)]
    enum Head {
        /// No prefix tokens, the final norm on the patch tokens.
        Plain,
        /// A class and two register tokens.
        Tokens,
        /// timm's `_gap` models with `fc_norm`: no final norm, and an
        /// `fc_norm` the pooled output uses but I-JEPA's patch tokens never
        /// reach — not trainable (stable-pretraining gives it no gradient).
        FcNorm,
    }
    for recipe in [Recipe::Official, Recipe::Seed] {
        for head in [Head::Plain, Head::Tokens, Head::FcNorm] {
            let mut cfg = relaxed(recipe);
            match head {
                Head::Plain => {}
                Head::Tokens => {
                    cfg.encoder.class_token = true;
                    cfg.encoder.reg_tokens = 2;
                    cfg.encoder.global_pool = ijepa_encoder::Pool::Token;
                }
                Head::FcNorm => {
                    cfg.encoder.norm = false;
                    cfg.encoder.fc_norm = true;
                }
            }
            let model = IJepa::new(cfg.clone(), &Device::Cpu).unwrap();
            let (h, w) = cfg.encoder.image_size;
            let images = Tensor::randn(0f32, 1.0, (3, 3, h, w), &Device::Cpu).unwrap();
            let out = model.forward(&images, 0, EmbeddingSource::Teacher).unwrap();
            let grads = out.loss.backward().unwrap();
            let vars = model.trainable_vars();
            let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
            // The official table is fixed; the seed's (a timm ViT's) is learned.
            assert_eq!(names.contains(&"encoder.pos_embed"), recipe == Recipe::Seed);
            assert!(!names.contains(&"predictor.predictor_pos_embed"));
            // Prefix tokens are not encoded by I-JEPA, so not trained.
            assert!(names
                .iter()
                .all(|n| !n.ends_with("cls_token") && !n.ends_with("reg_token")));
            // The embedding is the patch tokens only, as in stable-pretraining.
            let n = (h / 16) * (w / 16);
            assert_eq!(out.embedding.dims(), &[3, n, cfg.encoder.embed_dim]);
            for (name, var) in &vars {
                let g = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{recipe:?}: {name} got no gradient"));
                let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert!(
                    g.iter().all(|v| v.is_finite()) && g.iter().any(|v| *v != 0.0),
                    "{recipe:?}: {name}"
                );
            }
            for (name, t) in model.teacher_weights() {
                assert!(
                    grads.get(t).is_none() && !t.track_op(),
                    "{recipe:?}: teacher {name} is in the graph"
                );
            }
            assert!(!out.embedding.track_op());
            assert!(out.num_targets > 0 && out.num_context > 0);
            assert!(
                !names.iter().any(|n| n.starts_with("encoder.fc_norm.")),
                "{names:?}"
            );
            if head == Head::FcNorm {
                // Still the student's weights: saved, exported and EMA'd.
                let weights = model.student_weights().unwrap();
                assert!(
                    weights.contains_key("fc_norm.weight"),
                    "{:?}",
                    weights.keys()
                );
                assert!(model.teacher_weights().contains_key("fc_norm.weight"));
            }
        }
    }
}

#[test]
fn eval_mode_encodes_all_patches_with_zero_loss() {
    let mut model = IJepa::new(config(Recipe::Seed), &Device::Cpu).unwrap();
    model.eval();
    let out = model
        .forward(&images(), 0, EmbeddingSource::Student)
        .unwrap();
    assert_eq!(out.loss.to_scalar::<f32>().unwrap(), 0.0);
    assert_eq!((out.num_targets, out.num_context), (0, 16));
    assert_eq!(out.embedding.dims(), &[3, 16, 48]);
}

#[test]
fn embedding_source_must_be_teacher_or_student() {
    let err = "target".parse::<EmbeddingSource>().unwrap_err().to_string();
    assert!(
        err.contains("'teacher' or 'student', got 'target'"),
        "{err}"
    );
    assert_eq!(
        "student".parse::<EmbeddingSource>().unwrap(),
        EmbeddingSource::Student
    );
}

#[test]
fn a_training_step_moves_the_teacher_by_one_minus_momentum() {
    let mut model = IJepa::new(config(Recipe::Seed), &Device::Cpu).unwrap();
    let before = model.teacher_weights()["blocks.0.mlp.fc1.weight"]
        .copy()
        .unwrap();
    let out = model
        .forward(&images(), 3, EmbeddingSource::Teacher)
        .unwrap();
    let grads = out.loss.backward().unwrap();
    let mut opt = AdamW::new(AdamW::ijepa_groups(model.trainable_vars(), 0.04), 1e-3);
    opt.step(&grads).unwrap();
    let student = model.student_weight("blocks.0.mlp.fc1.weight").unwrap();
    model.update_teacher(0.99).unwrap();
    let after = &model.teacher_weights()["blocks.0.mlp.fc1.weight"];
    // t' = 0.99·t + 0.01·s
    let expected = ((&before * 0.99).unwrap() + (student * 0.01).unwrap()).unwrap();
    let max_abs_diff = |a: &Tensor, b: &Tensor| -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    let err = max_abs_diff(after, &expected);
    assert!(err < 1e-7, "{err}");
    assert!(max_abs_diff(after, &before) > 0.0);

    // Updated in place, never rebuilt: the teacher network gives what a
    // network built afresh from the updated weights gives, to the bit.
    let x = images();
    let ours = model.teacher().forward(&x).unwrap();
    let copies = model
        .teacher_weights()
        .iter()
        .map(|(k, t)| (k.clone(), t.copy().unwrap()))
        .collect();
    let fresh = ijepa_encoder::VisionTransformer::from_weights(&model.config().encoder, copies)
        .unwrap()
        .forward(&x)
        .unwrap();
    assert_eq!(max_abs_diff(&ours, &fresh), 0.0);
    assert!(max_abs_diff(&ours, &model.student().forward(&x).unwrap()) > 0.0);
}

#[test]
fn same_seed_same_loss() {
    let loss = |seed| {
        let mut cfg = config(Recipe::Seed);
        cfg.seed = seed;
        let model = IJepa::new(cfg, &Device::Cpu).unwrap();
        let images = Tensor::ones((2, 3, 64, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        model
            .forward(&images, 1, EmbeddingSource::Teacher)
            .unwrap()
            .loss
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(loss(5), loss(5));
    assert_ne!(loss(5), loss(6));
}

#[test]
fn any_sampler_plugs_in_and_a_wrong_grid_is_refused() {
    use ijepa_masking::{FullContext, Grid, IndexBatch, MaskBatch, MaskSampler};
    /// Context = even patches, one target = odd patches.
    struct Halves(Grid);
    impl MaskSampler for Halves {
        fn grid(&self) -> Grid {
            self.0
        }
        fn sample(&self, batch: usize, _: u64) -> MaskBatch {
            let n = self.0.num_patches() as u32;
            let rows = |p: u32| {
                let r: Vec<u32> = (0..n).filter(|i| i % 2 == p).collect();
                IndexBatch::from_flat(batch, r.len(), r.repeat(batch))
            };
            MaskBatch {
                contexts: vec![rows(0)],
                targets: vec![rows(1)],
                ..Default::default()
            }
        }
    }
    let model = IJepa::new(config(Recipe::Seed), &Device::Cpu).unwrap();
    let model = model
        .with_sampler(Box::new(Halves(Grid::new_2d(4, 4).unwrap())))
        .unwrap();
    let out = model
        .forward(&images(), 0, EmbeddingSource::Teacher)
        .unwrap();
    assert_eq!((out.num_context, out.num_targets), (8, 8));
    let err = IJepa::new(config(Recipe::Seed), &Device::Cpu)
        .unwrap()
        .with_sampler(Box::new(FullContext::new(Grid::new_2d(14, 14).unwrap())))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("14x14 grid") && err.contains("4x4"), "{err}");
}

#[test]
fn ema_momentum_follows_the_recipe() {
    let official = config(Recipe::Official);
    assert!((official.momentum(1000.0, 1).at(500, 0) - 0.998).abs() < 1e-12);
    let seed = config(Recipe::Seed);
    assert!((seed.momentum(1.0, 10).at(0, 5) - 0.998).abs() < 1e-12);
}
