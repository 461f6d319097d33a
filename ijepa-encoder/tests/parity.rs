//! Parity with timm and transformers on the same weights and inputs.
//!
//! Fixtures come from `tests/fixtures/make_fixtures.py` (timm 1.0.31,
//! transformers 5.24.0, PyTorch 2.15.0): each folder holds weights as the
//! library saved them and `io.safetensors` with inputs and the library's
//! outputs. Tolerance: max |Δ| ≤ 1e-4 in f32.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use ijepa_encoder::weights::{load, Branch, LoadOptions, WeightLayout};
use ijepa_encoder::{TokenEncoder, VisionTransformer};

const TOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn io(name: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("io.safetensors"), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn assert_close(what: &str, ours: &Tensor, reference: &Tensor) {
    let err = max_abs_diff(ours, reference);
    eprintln!("{what}: max |Δ| = {err:.2e}");
    assert!(err <= TOL, "{what}: max |Δ| = {err} > {TOL}");
}

/// Full, masked and pooled outputs (and the second resolution when the
/// fixture has it) against the reference.
fn check_outputs(
    name: &str,
    vit: &VisionTransformer,
    io: &std::collections::HashMap<String, Tensor>,
) {
    let tokens = vit.forward(&io["images"]).unwrap();
    assert_close(&format!("{name} tokens"), &tokens, &io["tokens"]);
    let kept = io["kept"].to_dtype(DType::U32).unwrap();
    let masked = vit.forward_patches(&io["images"], Some(&kept)).unwrap();
    assert_close(
        &format!("{name} masked tokens"),
        &masked,
        &io["masked_tokens"],
    );
    assert_close(
        &format!("{name} pooled"),
        &vit.pool_patches(&tokens).unwrap(),
        &io["pooled"],
    );
    if let Some(images_2) = io.get("images_2") {
        let tokens_2 = vit.forward(images_2).unwrap();
        assert_close(
            &format!("{name} tokens at {:?}", images_2.dims()),
            &tokens_2,
            &io["tokens_2"],
        );
    }
}

fn load_default(path: &Path) -> ijepa_encoder::weights::LoadedWeights {
    load(path, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn timm_with_class_and_register_tokens_and_layer_scale() {
    let loaded = load_default(&fixture("timm_cls"));
    assert_eq!(loaded.layout, WeightLayout::Timm);
    let c = &loaded.config;
    assert!(c.class_token && c.reg_tokens == 2 && c.layer_scale == Some(0.1));
    assert_eq!(loaded.data.mean, [0.5, 0.5, 0.5]);
    check_outputs("timm_cls", &loaded.build().unwrap(), &io("timm_cls"));
}

#[test]
fn timm_ijepa_gap_encoder_at_patch_14() {
    let loaded = load_default(&fixture("timm_gap"));
    assert_eq!(
        (
            loaded.config.patch_size,
            loaded.config.class_token,
            loaded.config.fc_norm
        ),
        (14, false, false)
    );
    check_outputs("timm_gap", &loaded.build().unwrap(), &io("timm_gap"));
}

#[test]
fn timm_with_fc_norm() {
    let loaded = load_default(&fixture("timm_fcnorm"));
    assert!(loaded.config.fc_norm);
    check_outputs("timm_fcnorm", &loaded.build().unwrap(), &io("timm_fcnorm"));
}

#[test]
fn hugging_face_ijepa_in_both_key_layouts() {
    for folder in ["hf_ijepa", "hf_ijepa_v4"] {
        let loaded = load_default(&fixture(folder));
        assert_eq!(loaded.layout, WeightLayout::Hf);
        assert_eq!(loaded.config.norm_eps, 1e-6);
        check_outputs(folder, &loaded.build().unwrap(), &io("hf_ijepa"));
    }
    // A single .safetensors file finds its config.json beside it.
    let loaded = load_default(&fixture("hf_ijepa_v4").join("model.safetensors"));
    assert_eq!(loaded.layout, WeightLayout::Hf);
}

#[test]
fn official_checkpoint_both_encoders() {
    let path = fixture("official").join("official.pth.tar");
    let io = io("official");
    // Official files carry no config: a width of 48 has no standard head count.
    let err = load(&path, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("number of attention heads of width 48") && err.contains("--model"),
        "{err}"
    );
    // A model name supplies it (tiny: 3 heads).
    let hint = Some("vit_tiny_patch16_224".to_string());
    let opts = |branch| LoadOptions {
        branch,
        model: hint.clone(),
        ..Default::default()
    };
    let context = load(&path, &opts(Branch::Context)).unwrap();
    assert_eq!(context.layout, WeightLayout::Official);
    assert_eq!(
        (
            context.config.embed_dim,
            context.config.num_heads,
            context.config.depth
        ),
        (48, 3, 2)
    );
    check_outputs("official encoder", &context.build().unwrap(), &io);
    // The default branch is the target encoder, the one I-JEPA evaluates; the
    // folder holding the checkpoint loads too.
    let target = load(&fixture("official"), &opts(Branch::default())).unwrap();
    let tokens = target.build().unwrap().forward(&io["images"]).unwrap();
    assert_close(
        "official target_encoder tokens",
        &tokens,
        &io["target_tokens"],
    );
}

/// Structurally different architectures of timm's registry, each shrunk by
/// timm's own `model_args` (`tests/fixtures/make_timm_sample.py`): the
/// config timm wrote is read as timm reads it, and the features equal
/// timm's.
#[test]
fn a_sample_of_the_registry_equals_timm_on_its_features() {
    let cases = [
        "base_gap_16_heads",
        "medium_no_qkv_bias_ls",
        "clip_quickgelu",
        "siglip_tanh_map_floor",
        "reg4_no_embed_class_fc_norm",
        "radio_no_final_norm",
        "beit3_scale_norms",
        "dinov2_giant_glu",
        "qk_norm_no_proj_bias",
        "dynamic_pad",
    ];
    for case in cases {
        let name = format!("timm_sample/{case}");
        let loaded = load_default(&fixture(&name));
        assert_eq!(loaded.layout, WeightLayout::Timm);
        check_outputs(case, &loaded.build().unwrap(), &io(&name));
    }
    // What the names promise, checked on the read configurations.
    let cfg = |case: &str| load_default(&fixture(&format!("timm_sample/{case}"))).config;
    assert_eq!(cfg("base_gap_16_heads").num_heads, 16);
    assert!(cfg("clip_quickgelu").pre_norm);
    let siglip = load_default(&fixture("timm_sample/siglip_tanh_map_floor"));
    assert!(
        siglip.notes.iter().any(|n| n.contains("attention-pool")),
        "{:?}",
        siglip.notes
    );
    assert!(siglip.ignored.iter().any(|k| k.starts_with("attn_pool.")));
    let radio = cfg("radio_no_final_norm");
    assert!(!radio.norm && !radio.fc_norm);
}
