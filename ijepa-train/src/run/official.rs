//! The official facebookresearch/ijepa YAML configurations (e.g.
//! `configs/in1k_vith14_ep300.yaml`), read as they are and mapped field by
//! field onto [`TrainConfig`].
//!
//! | official | ijepa-rs |
//! |---|---|
//! | `data.batch_size` | `data.batch_size` (per process: one process here) |
//! | `data.crop_size`, `mask.patch_size`, `meta.model_name` | `model.name` = `vit_{size}_patch{P}_gap_{crop}` when timm registers it with the official sizes, else the size's timm ViT with `model.args` `patch_size`, `img_size`, no class token, average pooling |
//! | `data.crop_scale` | `data.crop_scale` |
//! | `data.root_path` / `data.image_folder` | `data.path` (joined) |
//! | `data.num_workers` | `data.workers` |
//! | `data.use_horizontal_flip` | `data.horizontal_flip` |
//! | `data.use_color_distortion`, `data.color_jitter_strength` | `data.color_distortion`, `data.color_jitter_strength` |
//! | `data.use_gaussian_blur` | `data.gaussian_blur` (a note: the official `GaussianBlur` hands Pillow a tensor radius, which Pillow ≥ 10 refuses; applied as Pillow 9 read it, a float) |
//! | `data.pin_mem` | no effect (no pinned host memory here) |
//! | `logging.folder` | `run.out` |
//! | `logging.write_tag` | no effect (file names are fixed) |
//! | `mask.*` | `mask.*` (`enc_mask_scale` → `context_scale`, `pred_mask_scale` → `target_scale`, `aspect_ratio` → `target_aspect_ratio`, `num_pred_masks` → `num_targets`; `num_enc_masks` must be 1); the official sampler's biases are reproduced (`official_compat`) |
//! | `meta.pred_depth`, `meta.pred_emb_dim` | `model.predictor_depth`, `model.predictor_embed_dim` |
//! | `meta.load_checkpoint` | `run.resume` (from `run.out`) |
//! | `meta.read_checkpoint` | with `load_checkpoint`: `run.resume_from` = `logging.folder` joined with it (the official checkpoint whose run this one continues; see [`crate::run::official_checkpoint`]); without: no effect, as in the official code |
//! | `meta.use_bfloat16` | `run.precision = "bf16"` |
//! | `meta.copy_data` | no effect (a copy to the FAIR cluster's local disk) |
//! | `optimization.*` | `optim.*` (`warmup` → `warmup_epochs`) |
//!
//! Any other key is an error.

use std::path::PathBuf;

use serde::Deserialize;

use ijepa_encoder::registry::{self, Size, TimmArgs};

use crate::error::{Result, TrainError};
use crate::run::config::TrainConfig;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Official {
    data: Data,
    logging: Logging,
    mask: Mask,
    meta: Meta,
    optimization: Optimization,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Data {
    batch_size: usize,
    color_jitter_strength: f64,
    crop_scale: (f64, f64),
    crop_size: usize,
    image_folder: String,
    num_workers: usize,
    pin_mem: bool,
    root_path: String,
    use_color_distortion: bool,
    use_gaussian_blur: bool,
    use_horizontal_flip: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Logging {
    folder: String,
    write_tag: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mask {
    allow_overlap: bool,
    aspect_ratio: (f64, f64),
    enc_mask_scale: (f64, f64),
    min_keep: usize,
    num_enc_masks: usize,
    num_pred_masks: usize,
    patch_size: usize,
    pred_mask_scale: (f64, f64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    copy_data: bool,
    load_checkpoint: bool,
    model_name: String,
    pred_depth: usize,
    pred_emb_dim: usize,
    read_checkpoint: Option<String>,
    use_bfloat16: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Optimization {
    ema: (f64, f64),
    epochs: u64,
    final_lr: f64,
    final_weight_decay: f64,
    ipe_scale: f64,
    lr: f64,
    start_lr: f64,
    warmup: f64,
    weight_decay: f64,
}

/// The official encoders (facebookresearch/ijepa `vision_transformer.py`):
/// width, depth and heads of each `meta.model_name`, and the timm
/// architecture of the same sizes.
const SIZES: &[(&str, usize, usize, usize, &str)] = &[
    ("vit_tiny", 192, 12, 3, "vit_tiny_patch16_224"),
    ("vit_small", 384, 12, 6, "vit_small_patch16_224"),
    ("vit_base", 768, 12, 12, "vit_base_patch16_224"),
    ("vit_large", 1024, 24, 16, "vit_large_patch16_224"),
    ("vit_huge", 1280, 32, 16, "vit_huge_patch14_224"),
    ("vit_giant", 1408, 40, 16, "vit_giant_patch14_224"),
];

/// The timm name and arguments of an official encoder: the registered
/// I-JEPA name (`vit_huge_patch14_gap_224`) when timm has one with exactly
/// these sizes, else the size's architecture with the patch, image size and
/// the official encoders' lack of class token stated.
fn encoder(model: &str, patch: usize, crop: usize) -> Result<(String, TimmArgs)> {
    let Some(&(_, dim, depth, heads, base)) = SIZES.iter().find(|s| s.0 == model) else {
        return Err(TrainError::Config(format!(
            "official YAML: meta.model_name {model:?} is not one of {}",
            SIZES.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
        )));
    };
    let exact = format!("{model}_patch{patch}_gap_{crop}");
    if let Ok(r) = registry::resolve(&exact, &TimmArgs::default()) {
        let c = &r.config;
        let same = (
            c.embed_dim,
            c.depth,
            c.num_heads,
            c.image_size,
            c.class_token,
        ) == (dim, depth, heads, (crop, crop), false);
        if same && c.norm && !c.fc_norm {
            return Ok((exact, TimmArgs::default()));
        }
    }
    Ok((
        base.to_string(),
        TimmArgs {
            patch_size: Some(Size::Square(patch)),
            img_size: Some(Size::Square(crop)),
            ..TimmArgs::gap()
        },
    ))
}

/// Maps an official YAML configuration onto a [`TrainConfig`] for a job of
/// `processes` processes; also returns one note per official field that
/// has no effect here, and one saying what the global batch is. The
/// official `data.batch_size` is per GPU (one process each), so the global
/// batch is it × `processes`.
///
/// # Errors
/// YAML that does not parse, an unknown or missing key, or a setting we do
/// not implement (several context masks), each named.
pub fn from_yaml_str(text: &str, processes: usize) -> Result<(TrainConfig, Vec<String>)> {
    let o: Official = serde_yaml_ng::from_str(text)
        .map_err(|e| TrainError::Config(format!("official YAML: {e}")))?;
    let unsupported = |what: &str| {
        Err(TrainError::Config(format!(
            "official YAML: {what} is not implemented in ijepa-rs"
        )))
    };
    if o.mask.num_enc_masks != 1 {
        return unsupported(&format!(
            "mask.num_enc_masks: {} (only 1 context mask per image)",
            o.mask.num_enc_masks
        ));
    }
    let mut cfg = TrainConfig::default();
    (cfg.model.name, cfg.model.args) =
        encoder(&o.meta.model_name, o.mask.patch_size, o.data.crop_size)?;
    cfg.model.predictor_depth = Some(o.meta.pred_depth);
    cfg.model.predictor_embed_dim = Some(o.meta.pred_emb_dim);

    cfg.data.path = Some(PathBuf::from(&o.data.root_path).join(&o.data.image_folder));
    cfg.data.batch_size = o.data.batch_size.saturating_mul(processes.max(1));
    cfg.data.crop_scale = o.data.crop_scale;
    cfg.data.horizontal_flip = o.data.use_horizontal_flip;
    cfg.data.color_distortion = o.data.use_color_distortion;
    cfg.data.color_jitter_strength = o.data.color_jitter_strength;
    cfg.data.gaussian_blur = o.data.use_gaussian_blur;
    cfg.data.workers = o.data.num_workers;

    cfg.mask.num_targets = o.mask.num_pred_masks;
    cfg.mask.target_scale = o.mask.pred_mask_scale;
    cfg.mask.target_aspect_ratio = o.mask.aspect_ratio;
    cfg.mask.context_scale = o.mask.enc_mask_scale;
    cfg.mask.min_keep = o.mask.min_keep;
    cfg.mask.allow_overlap = o.mask.allow_overlap;
    cfg.mask.official_compat = true;

    let p = &o.optimization;
    cfg.optim.epochs = p.epochs;
    cfg.optim.warmup_epochs = p.warmup;
    cfg.optim.start_lr = p.start_lr;
    cfg.optim.lr = p.lr;
    cfg.optim.final_lr = p.final_lr;
    cfg.optim.weight_decay = p.weight_decay;
    cfg.optim.final_weight_decay = p.final_weight_decay;
    cfg.optim.ema = p.ema;
    cfg.optim.ipe_scale = p.ipe_scale;

    cfg.run.out = PathBuf::from(&o.logging.folder);
    cfg.run.resume = o.meta.load_checkpoint;
    if o.meta.load_checkpoint {
        // As train.py: os.path.join(folder, r_file) (an absolute r_file wins).
        cfg.run.resume_from = o
            .meta
            .read_checkpoint
            .as_ref()
            .map(|r| PathBuf::from(&o.logging.folder).join(r));
    }
    cfg.run.precision = if o.meta.use_bfloat16 { "bf16" } else { "f32" }.into();
    cfg.run.checkpoint_every = 0;

    let mut notes = vec![format!(
        "data.batch_size: {} per process × {} process{} = a global batch of {} (the official runs used 16 GPUs)",
        o.data.batch_size,
        processes.max(1),
        if processes > 1 { "es" } else { "" },
        cfg.data.batch_size
    )];
    if o.data.pin_mem {
        notes.push("data.pin_mem: no effect (no pinned host memory in ijepa-rs)".to_string());
    }
    notes.push(format!(
        "logging.write_tag {:?}: no effect (ijepa-rs names its files itself)",
        o.logging.write_tag
    ));
    if let (false, Some(r)) = (o.meta.load_checkpoint, &o.meta.read_checkpoint) {
        notes.push(format!(
            "meta.read_checkpoint {r:?}: no effect while load_checkpoint is false (as in the official code)"
        ));
    }
    if o.meta.copy_data {
        notes.push("meta.copy_data: no effect (a copy to the FAIR cluster's local disk)".into());
    }
    if o.meta.use_bfloat16 {
        notes.push(
            "meta.use_bfloat16: bf16 autocast applies on CUDA; on the CPU the run is f32, as PyTorch's CUDA autocast is there".into(),
        );
    }
    if o.data.use_gaussian_blur {
        notes.push(
            "data.use_gaussian_blur: the official GaussianBlur passes Pillow a tensor radius, which Pillow >= 10 refuses; blurred as Pillow 9 read it (a float radius)".into(),
        );
    }
    if !o.data.use_color_distortion && o.data.color_jitter_strength != 0.0 {
        notes.push(format!(
            "data.color_jitter_strength {}: no effect while use_color_distortion is false (as in the official code)",
            o.data.color_jitter_strength
        ));
    }
    Ok((cfg, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields and values of the official `configs/in1k_vith14_ep300.yaml`.
    const VITH14: &str = include_str!("../../tests/fixtures/official_vith14_ep300.yaml");

    #[test]
    fn the_official_vith14_config_maps_field_by_field() {
        let (cfg, notes) = from_yaml_str(VITH14, 1).unwrap();
        assert_eq!(cfg.model.name, "vit_huge_patch14_gap_224");
        assert_eq!(cfg.model.args, TimmArgs::default());
        assert_eq!(cfg.model.predictor_depth, Some(12));
        assert_eq!(cfg.model.predictor_embed_dim, Some(384));
        assert_eq!(cfg.data.batch_size, 128);
        assert!(notes[0].contains("128 per process × 1 process = a global batch of 128"));
        // Per GPU, as the official launcher runs one process per GPU.
        let (sixteen, notes16) = from_yaml_str(VITH14, 16).unwrap();
        assert_eq!(sixteen.data.batch_size, 2048);
        assert!(notes16[0].contains("× 16 processes = a global batch of 2048"));
        assert_eq!(cfg.data.crop_scale, (0.3, 1.0));
        assert_eq!(cfg.data.workers, 10);
        assert!(!cfg.data.horizontal_flip);
        assert_eq!(
            cfg.data.path,
            Some(PathBuf::from("/datasets/imagenet_full_size/061417/"))
        );
        assert_eq!(cfg.mask.num_targets, 4);
        assert_eq!(cfg.mask.target_scale, (0.15, 0.2));
        assert_eq!(cfg.mask.target_aspect_ratio, (0.75, 1.5));
        assert_eq!(cfg.mask.context_scale, (0.85, 1.0));
        assert_eq!(cfg.mask.min_keep, 10);
        assert!(cfg.mask.official_compat && !cfg.mask.allow_overlap);
        assert_eq!(cfg.optim.epochs, 300);
        assert_eq!(cfg.optim.warmup_epochs, 40.0);
        assert_eq!(
            (cfg.optim.start_lr, cfg.optim.lr, cfg.optim.final_lr),
            (2e-4, 1e-3, 1e-6)
        );
        assert_eq!(
            (cfg.optim.weight_decay, cfg.optim.final_weight_decay),
            (0.04, 0.4)
        );
        assert_eq!(cfg.optim.ema, (0.996, 1.0));
        assert_eq!(cfg.optim.ipe_scale, 1.0);
        assert_eq!(
            cfg.run.out,
            PathBuf::from("/logs/vith14.224-bs.2048-ep.300/")
        );
        assert_eq!(cfg.run.precision, "bf16");
        assert!(!cfg.run.resume);
        cfg.validate().unwrap();
        let encoder = cfg.encoder().unwrap();
        assert_eq!(
            (encoder.embed_dim, encoder.depth, encoder.num_heads),
            (1280, 32, 16)
        );
        assert!(!encoder.class_token);
        assert!(notes.iter().any(|n| n.contains("pin_mem")));
        assert!(notes.iter().any(|n| n.contains("use_bfloat16")));
    }

    #[test]
    fn unknown_and_unsupported_fields_are_errors() {
        for (from, to, expect) in [
            ("num_enc_masks: 1", "num_enc_masks: 2", "num_enc_masks"),
            ("pin_mem: true", "pin_memory: true", "pin_memory"),
            ("model_name: vit_huge", "model_name: resnet50", "resnet50"),
        ] {
            assert!(VITH14.contains(from), "{from}");
            let err = from_yaml_str(&VITH14.replace(from, to), 1)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{to}: {err}");
        }
    }

    #[test]
    fn colour_distortion_and_blur_map_onto_the_data_section() {
        let on = VITH14
            .replace("use_gaussian_blur: false", "use_gaussian_blur: true")
            .replace("use_color_distortion: false", "use_color_distortion: true")
            .replace("color_jitter_strength: 0.0", "color_jitter_strength: 0.5");
        let (cfg, notes) = from_yaml_str(&on, 1).unwrap();
        cfg.validate().unwrap();
        assert!(cfg.data.color_distortion && cfg.data.gaussian_blur);
        assert_eq!(cfg.data.color_jitter_strength, 0.5);
        assert!(
            notes.iter().any(|n| n.contains("Pillow >= 10")),
            "{notes:?}"
        );
        let (off, notes) = from_yaml_str(VITH14, 1).unwrap();
        assert!(!off.data.color_distortion && !off.data.gaussian_blur);
        assert!(!notes.iter().any(|n| n.contains("GaussianBlur")));
        let strong = on.replace("color_jitter_strength: 0.5", "color_jitter_strength: 3.0");
        let err = from_yaml_str(&strong, 1).unwrap().0.validate().unwrap_err();
        assert!(
            err.to_string()
                .contains("data.color_jitter_strength 3 must be 0 to 2.5"),
            "{err}"
        );
    }

    #[test]
    fn read_checkpoint_continues_the_official_run_only_with_load_checkpoint() {
        let with = VITH14
            .replace("load_checkpoint: false", "load_checkpoint: true")
            .replace(
                "read_checkpoint: null",
                "read_checkpoint: jepa-ep300.pth.tar",
            );
        let (cfg, _) = from_yaml_str(&with, 1).unwrap();
        assert!(cfg.run.resume);
        assert_eq!(
            cfg.run.resume_from,
            Some(cfg.run.out.join("jepa-ep300.pth.tar")),
            "joined to logging.folder, as train.py does"
        );
        let without = VITH14.replace("read_checkpoint: null", "read_checkpoint: /ck/a.pth.tar");
        let (cfg, notes) = from_yaml_str(&without, 1).unwrap();
        assert_eq!(cfg.run.resume_from, None);
        assert!(
            notes
                .iter()
                .any(|n| n.contains("no effect while load_checkpoint is false")),
            "{notes:?}"
        );
    }
}
