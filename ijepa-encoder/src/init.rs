//! Seeded initialisation of fresh models, by rule over their layout.
//!
//! candle's CPU generator cannot be seeded, so every initial value is drawn
//! here from ChaCha8 streams keyed by the user's seed and the tensor's name:
//! the same seed gives the same weights on every run and platform, whatever
//! order tensors are created in. What a tensor is (a Linear weight, a
//! bias, a norm, a token, a table) is read off its name and shape in the
//! layout the constructors record ([`crate::layout::record_layout`]), so
//! the layout is written once.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::config::VitConfig;
use crate::error::Result;
use crate::layout::WeightMap;
use crate::pos_embed;

/// How Linear and patch-projection weights (and their biases) are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// facebookresearch/ijepa's effective initialisation: every Linear and
    /// the patch projection truncated-normal (`std`), biases 0.
    #[default]
    Official,
    /// timm's `VisionTransformer.init_weights('')`: Linears truncated-normal
    /// (`std`) with zero biases; the patch convolution keeps PyTorch's
    /// default (weight and bias uniform in ±1/√fan_in).
    Timm,
    /// PyTorch's default for every Linear and the patch convolution
    /// (`kaiming_uniform_(a=√5)`: weight and bias uniform in ±1/√fan_in),
    /// as stable-pretraining's predictor keeps it.
    TorchDefault,
}

/// How to initialise a fresh model.
#[derive(Debug, Clone, PartialEq)]
pub struct InitOptions {
    /// Seed of every draw.
    pub seed: u64,
    /// Standard deviation of the truncated-normal weights (official: 0.02).
    pub std: f64,
    /// How Linear and patch weights are drawn.
    pub scheme: Scheme,
    /// Divide `attn.proj` and `mlp.fc2` weights of block `l` (from 1) by
    /// `√(2l)`. The official code does this and then overwrites it with a
    /// re-initialisation, so it is off by default; stable-pretraining keeps it.
    pub rescale_depth: bool,
    /// Fill the position embedding with the fixed 2-D sin-cos table (I-JEPA)
    /// instead of a truncated-normal draw (a learned table, timm's default).
    pub sincos_pos_embed: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            std: 0.02,
            scheme: Scheme::Official,
            rescale_depth: false,
            sincos_pos_embed: true,
        }
    }
}

/// A ChaCha8 stream for one tensor: key = seed, name hash and a domain tag.
pub fn tensor_rng(seed: u64, name: &str) -> ChaCha8Rng {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&hash.to_le_bytes());
    key[16..].copy_from_slice(b"ijepa-rs weights");
    ChaCha8Rng::from_seed(key)
}

/// `n` draws of `N(0, std²)` truncated to `[−2, 2]` (PyTorch's
/// `trunc_normal_(std=std)`, whose bounds are absolute: for std 0.02 this
/// is a plain normal in practice), by rejection.
pub fn trunc_normal(n: usize, std: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let normal = Normal::new(0.0, std).expect("std is positive and finite");
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let v: f64 = normal.sample(rng);
        if (-2.0..=2.0).contains(&v) {
            out.push(v as f32);
        }
    }
    out
}

/// `n` draws uniform in `±bound`.
fn uniform(n: usize, bound: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-bound..=bound) as f32)
        .collect()
}

/// The block index of `blocks.{l}.…` or `predictor_blocks.{l}.…`.
fn block_index(name: &str) -> Option<usize> {
    let rest = name
        .strip_prefix("blocks.")
        .or_else(|| name.strip_prefix("predictor_blocks."))?;
    rest.split('.').next()?.parse().ok()
}

/// Values for every tensor of `layout` by rule: Linear and patch weights
/// and their biases per [`InitOptions::scheme`] (with the depth rescale of
/// `attn.proj` / `mlp.fc2`), norm weights 1 and biases 0; `special` gives
/// the values of tensors no rule covers (tables, tokens, layer scale) —
/// it sees every name first and may take any. Draws are keyed by
/// `opts.seed` and `domain` + the name.
///
/// # Errors
/// A tensor `special` does not take and no rule covers, named.
pub fn init_layout(
    layout: &[(String, Vec<usize>)],
    opts: &InitOptions,
    domain: &str,
    device: &Device,
    special: impl Fn(&str, &[usize]) -> Option<Vec<f32>>,
) -> Result<WeightMap> {
    let shape_of = |name: &str| {
        layout
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
    };
    let mut out = WeightMap::new();
    for (name, shape) in layout {
        let n: usize = shape.iter().product();
        let rng = || tensor_rng(opts.seed, &format!("{domain}{name}"));
        let values = if let Some(v) = special(name, shape) {
            v
        } else if let Some(base) = name.strip_suffix(".weight") {
            let fan_in: usize = shape[1..].iter().product();
            if shape.len() == 1 {
                vec![1.0; n] // a norm's weight
            } else {
                let torch = match opts.scheme {
                    Scheme::Official => false,
                    Scheme::Timm => shape.len() == 4, // only the patch convolution
                    Scheme::TorchDefault => true,
                };
                let mut w = if torch {
                    uniform(n, 1.0 / (fan_in as f64).sqrt(), &mut rng())
                } else {
                    trunc_normal(n, opts.std, &mut rng())
                };
                let rescaled = base.ends_with("attn.proj") || base.ends_with("mlp.fc2");
                if let (true, true, Some(l)) = (opts.rescale_depth, rescaled, block_index(name)) {
                    let div = (2.0 * (l + 1) as f64).sqrt() as f32;
                    w.iter_mut().for_each(|v| *v /= div);
                }
                w
            }
        } else if let Some(base) = name.strip_suffix(".bias") {
            // A Linear's or convolution's bias is beside a weight of rank ≥ 2.
            let weight = shape_of(&format!("{base}.weight")).unwrap_or_default();
            let torch = match opts.scheme {
                Scheme::Official => false,
                Scheme::Timm => weight.len() == 4,
                Scheme::TorchDefault => weight.len() >= 2,
            };
            if torch {
                let fan_in: usize = weight[1..].iter().product();
                uniform(n, 1.0 / (fan_in as f64).sqrt(), &mut rng())
            } else {
                vec![0.0; n]
            }
        } else {
            return Err(crate::EncoderError::InvalidConfig(format!(
                "no initialisation rule for {name} {shape:?}"
            )));
        };
        out.insert(
            name.clone(),
            Tensor::from_vec(values, shape.as_slice(), device)?,
        );
    }
    Ok(out)
}

/// Fresh weights for `cfg`, in timm's layout, on `device` (f32).
///
/// Linear and patch weights per [`InitOptions::scheme`], LayerNorms (1, 0),
/// class/register tokens `N(0, 1e-6²)` as timm, layer scale at its initial
/// value, position embedding per [`InitOptions::sincos_pos_embed`] (prefix
/// rows 0, as MAE and I-JEPA do); with [`Scheme::Timm`], a `GluMlp`'s gated
/// half of `fc1` as timm's `GluMlp.init_weights` sets it.
///
/// # Errors
/// A configuration that does not validate.
pub fn init_weights(cfg: &VitConfig, opts: &InitOptions, device: &Device) -> Result<WeightMap> {
    cfg.validate()?;
    let layout = crate::VisionTransformer::layout(cfg)?;
    let normal =
        |name: &str, n: usize, std: f64| trunc_normal(n, std, &mut tensor_rng(opts.seed, name));
    let glu_gate = opts.scheme == Scheme::Timm && cfg.mlp == crate::config::MlpKind::Glu;
    init_layout(&layout, opts, "", device, |name, shape| {
        let n: usize = shape.iter().product();
        match name {
            "pos_embed" if opts.sincos_pos_embed => {
                let (gh, gw) = cfg.grid_size();
                let mut table = vec![0.0; n - gh * gw * cfg.embed_dim];
                table.extend(pos_embed::sincos_2d(gh, gw, cfg.embed_dim, true));
                Some(table)
            }
            "pos_embed" => Some(normal(name, n, opts.std)),
            "cls_token" | "reg_token" => Some(normal(name, n, 1e-6)),
            // timm's GluMlp.init_weights: the gated half of fc1 starts as
            // the constant 1 (weights N(0, 1e-6²), biases 1).
            _ if glu_gate && name.ends_with(".mlp.fc1.weight") => {
                let mut w = normal(name, n / 2, opts.std);
                w.extend(normal(&format!("{name}:gate"), n - n / 2, 1e-6));
                Some(w)
            }
            _ if glu_gate && name.ends_with(".mlp.fc1.bias") => {
                let mut b = vec![0.0; n / 2];
                b.resize(n, 1.0);
                Some(b)
            }
            _ if name.ends_with(".gamma") => Some(vec![cfg.layer_scale.unwrap_or(1.0) as f32; n]),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> VitConfig {
        let mut cfg = VitConfig::from_timm_name("vit_tiny_patch16_224").unwrap();
        cfg.depth = 2;
        cfg
    }

    fn values(m: &WeightMap, key: &str) -> Vec<f32> {
        m[key].flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() {
        let a = init_weights(&tiny(), &InitOptions::default(), &Device::Cpu).unwrap();
        let b = init_weights(&tiny(), &InitOptions::default(), &Device::Cpu).unwrap();
        let c = init_weights(
            &tiny(),
            &InitOptions {
                seed: 1,
                ..Default::default()
            },
            &Device::Cpu,
        )
        .unwrap();
        let key = "blocks.1.attn.qkv.weight";
        assert_eq!(values(&a, key), values(&b, key));
        assert_ne!(values(&a, key), values(&c, key));
        // std 0.02 over 110k draws.
        let x = values(&a, key);
        let var = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64;
        assert!((var.sqrt() - 0.02).abs() < 0.001, "{}", var.sqrt());
        assert!(values(&a, "blocks.0.norm1.weight")
            .iter()
            .all(|v| *v == 1.0));
        assert!(values(&a, "blocks.0.mlp.fc1.bias")
            .iter()
            .all(|v| *v == 0.0));
    }

    #[test]
    fn depth_rescale_divides_output_projections() {
        let plain = init_weights(&tiny(), &InitOptions::default(), &Device::Cpu).unwrap();
        let opts = InitOptions {
            rescale_depth: true,
            ..Default::default()
        };
        let scaled = init_weights(&tiny(), &opts, &Device::Cpu).unwrap();
        let ratio = |k: &str| values(&plain, k)[7] / values(&scaled, k)[7];
        assert!((ratio("blocks.1.mlp.fc2.weight") - 2.0).abs() < 1e-5); // √(2·2)
        assert!((ratio("blocks.0.attn.proj.weight") - 2f32.sqrt()).abs() < 1e-5);
        assert_eq!(ratio("blocks.1.attn.qkv.weight"), 1.0);
    }

    #[test]
    fn timm_starts_a_glu_gate_at_one() {
        let args = crate::registry::TimmArgs {
            img_size: Some(crate::registry::Size::Square(28)),
            embed_dim: Some(32),
            depth: Some(1),
            num_heads: Some(2),
            ..Default::default()
        };
        let cfg = crate::registry::resolve("vit_giant_patch14_dinov2", &args)
            .unwrap()
            .config;
        assert_eq!(cfg.mlp, crate::config::MlpKind::Glu);
        let opts = InitOptions {
            scheme: Scheme::Timm,
            ..Default::default()
        };
        let w = init_weights(&cfg, &opts, &Device::Cpu).unwrap();
        let bias = values(&w, "blocks.0.mlp.fc1.bias");
        let weight = values(&w, "blocks.0.mlp.fc1.weight");
        let (h, hw) = (bias.len() / 2, weight.len() / 2);
        assert!(bias[..h].iter().all(|b| *b == 0.0) && bias[h..].iter().all(|b| *b == 1.0));
        assert!(weight[hw..].iter().all(|v| v.abs() < 1e-5));
        let std = (weight[..hw]
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            / hw as f64)
            .sqrt();
        assert!((std / 0.02 - 1.0).abs() < 0.1, "{std}");
        // The official scheme has no such rule.
        let plain = init_weights(&cfg, &InitOptions::default(), &Device::Cpu).unwrap();
        assert!(values(&plain, "blocks.0.mlp.fc1.bias")
            .iter()
            .all(|b| *b == 0.0));
    }

    #[test]
    fn torch_default_is_uniform_in_one_over_root_fan_in() {
        let opts = InitOptions {
            scheme: Scheme::TorchDefault,
            ..Default::default()
        };
        let w = init_weights(&tiny(), &opts, &Device::Cpu).unwrap();
        let bound = 1.0 / (192f32).sqrt();
        for key in ["blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias"] {
            let v = values(&w, key);
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            // Uniform in ±b: the largest of 576+ draws is within 1 % of b.
            assert!(
                max <= bound && max > 0.99 * bound,
                "{key}: {max} vs {bound}"
            );
            let var = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64;
            let expected = (bound as f64).powi(2) / 3.0;
            assert!(
                (var / expected - 1.0).abs() < 0.15,
                "{key}: {var} vs {expected}"
            );
        }
        // Norms are not Linears.
        assert!(values(&w, "blocks.0.norm1.bias").iter().all(|v| *v == 0.0));
    }
}
