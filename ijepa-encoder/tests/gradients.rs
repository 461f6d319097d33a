//! Every trainable parameter receives a finite, non-zero gradient — through
//! the full forward, and (all but the prefix tokens, which I-JEPA leaves
//! out) through the patch-only I-JEPA encoding — and a model over variables
//! (recording the graph) computes the same values as one over plain tensors
//! (inference). The configurations cover every feature the encoder
//! implements.

use candle_core::{DType, Device, Tensor};
use ijepa_encoder::init::{init_weights, InitOptions};
use ijepa_encoder::layout::to_varmap;
use ijepa_encoder::{Activation, Pool, PosEmbed, TokenEncoder, VisionTransformer, VitConfig};

fn configs() -> Vec<(&'static str, VitConfig)> {
    let mut with_tokens = VitConfig::from_timm_name("vit_tiny_patch16_224").unwrap();
    with_tokens.image_size = (32, 32);
    with_tokens.patch_size = 8;
    with_tokens.depth = 2;
    with_tokens.reg_tokens = 2;
    with_tokens.layer_scale = Some(0.1);
    let mut ijepa = VitConfig::ijepa((32, 32), 8, 192, 2, 3, 768, 1e-6);
    ijepa.fixed_pos_embed = true;
    let mut fc_norm = ijepa.clone();
    fc_norm.fixed_pos_embed = false;
    fc_norm.norm = false;
    fc_norm.fc_norm = true;
    fc_norm.global_pool = Pool::Avg;
    // Every other feature at once: CLIP's pre-norm and quick GELU, qk-norm,
    // both scale norms, no projection biases, no qkv bias, no final norm.
    let mut rest = with_tokens.clone();
    rest.reg_tokens = 0;
    rest.pre_norm = true;
    rest.activation = Activation::QuickGelu;
    rest.qk_norm = true;
    rest.scale_attn_norm = true;
    rest.scale_mlp_norm = true;
    rest.proj_bias = false;
    rest.qkv_bias = false;
    rest.norm = false;
    let mut tanh_nopos = ijepa.clone();
    tanh_nopos.activation = Activation::GeluTanh;
    tanh_nopos.pos_embed = PosEmbed::None;
    vec![
        ("class+reg+layer scale", with_tokens),
        ("I-JEPA gap, fixed pos", ijepa),
        ("fc_norm", fc_norm),
        (
            "pre-norm, quick GELU, qk/scale norms, no biases, no final norm",
            rest,
        ),
        ("GELU tanh, no position embedding", tanh_nopos),
    ]
}

fn inputs() -> (Tensor, Tensor) {
    let images = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let kept = Tensor::new(&[[0u32, 3, 4, 9, 15], [1, 2, 7, 8, 12]], &Device::Cpu).unwrap();
    (images, kept)
}

#[test]
fn every_trainable_parameter_gets_a_gradient() {
    for (name, cfg) in configs() {
        let weights = init_weights(&cfg, &InitOptions::default(), &Device::Cpu).unwrap();
        let varmap = to_varmap(&weights).unwrap();
        let vit = VisionTransformer::from_varmap(&cfg, &varmap).unwrap();
        let (images, kept) = inputs();
        for patches_only in [false, true] {
            let out = if patches_only {
                vit.forward_patches(&images, Some(&kept)).unwrap()
            } else {
                vit.forward(&images).unwrap()
            };
            // pool_patches takes forward's output (prefix tokens first).
            let pooled = if patches_only {
                out.mean(1).unwrap()
            } else {
                vit.pool_patches(&out).unwrap()
            };
            // A loss that depends on every output element, non-uniformly.
            let target = Tensor::randn(0f32, 1.0, out.shape(), &Device::Cpu).unwrap();
            let loss = ((&out * &target).unwrap().sum_all().unwrap()
                + pooled.sqr().unwrap().sum_all().unwrap())
            .unwrap();
            let grads = loss.backward().unwrap();
            let vars = varmap.data().lock().unwrap();
            assert_eq!(vars.len(), weights.len());
            for (key, var) in vars.iter() {
                let grad = grads.get(var.as_tensor());
                let untouched = (key == "pos_embed" && cfg.fixed_pos_embed)
                    || (patches_only && (key == "cls_token" || key == "reg_token"))
                    // fc_norm applies to the pooled mean, not the tokens.
                    || (patches_only && key.starts_with("fc_norm"));
                if untouched {
                    assert!(grad.is_none(), "{name}: {key} got a gradient");
                    continue;
                }
                let grad = grad.unwrap_or_else(|| panic!("{name}: {key} received no gradient"));
                let g = grad.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert!(
                    g.iter().all(|v| v.is_finite()),
                    "{name}: {key} has a non-finite gradient"
                );
                assert!(
                    g.iter().any(|v| *v != 0.0),
                    "{name}: {key} has an all-zero gradient"
                );
            }
        }
    }
}

#[test]
fn training_and_inference_models_agree() {
    for (name, cfg) in configs() {
        let weights = init_weights(
            &cfg,
            &InitOptions {
                seed: 3,
                sincos_pos_embed: false,
                ..Default::default()
            },
            &Device::Cpu,
        )
        .unwrap();
        // Non-trivial norms so both LayerNorm paths are exercised for real.
        let weights = weights
            .into_iter()
            .map(|(k, t)| {
                let t = if k.ends_with("bias") || k.contains("norm") {
                    (t.clone() + Tensor::randn(0f32, 0.1, t.shape(), &Device::Cpu).unwrap())
                        .unwrap()
                } else {
                    t
                };
                (k, t)
            })
            .collect();
        let fused =
            VisionTransformer::from_weights(&cfg, ijepa_encoder::WeightMap::clone(&weights))
                .unwrap();
        let varmap = to_varmap(&weights).unwrap();
        let tracked = VisionTransformer::from_varmap(&cfg, &varmap).unwrap();
        let (images, kept) = inputs();
        for (a, b) in [
            (
                fused.forward(&images).unwrap(),
                tracked.forward(&images).unwrap(),
            ),
            (
                fused.forward_patches(&images, Some(&kept)).unwrap(),
                tracked.forward_patches(&images, Some(&kept)).unwrap(),
            ),
        ] {
            assert!(!a.track_op() && b.track_op());
            let err: f32 = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(
                err < 1e-5,
                "{name}: training and inference models differ by {err}"
            );
        }
        assert_eq!(fused.forward(&images).unwrap().dtype(), DType::F32);
    }
}
