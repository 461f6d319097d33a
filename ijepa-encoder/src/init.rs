//! Seeded initialisation of a fresh ViT, as I-JEPA initialises it.
//!
//! candle's CPU generator cannot be seeded, so every initial value is drawn
//! here from ChaCha8 streams keyed by the user's seed and the tensor's name:
//! the same seed gives the same weights on every run and platform, whatever
//! order tensors are created in.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::config::VitConfig;
use crate::error::Result;
use crate::{pos_embed, WeightMap};

/// How to initialise a fresh encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct InitOptions {
    /// Seed of every draw.
    pub seed: u64,
    /// Standard deviation of the truncated-normal weights (official: 0.02).
    pub std: f64,
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

/// Fresh weights for `cfg`, in timm's layout, on `device` (f32).
///
/// Linear and patch weights truncated-normal, biases 0, LayerNorms (1, 0),
/// class/register tokens `N(0, 1e-6²)` as timm, layer scale at its initial
/// value, position embedding per [`InitOptions::sincos_pos_embed`].
pub fn init_weights(cfg: &VitConfig, opts: &InitOptions, device: &Device) -> Result<WeightMap> {
    cfg.validate()?;
    let d = cfg.embed_dim;
    let mut w = WeightMap::new();
    let mut put = |name: String, shape: &[usize], data: Vec<f32>| -> Result<()> {
        let t = Tensor::from_vec(data, shape, device)?;
        w.insert(name, t);
        Ok(())
    };
    let normal = |name: &str, shape: &[usize], std: f64| {
        trunc_normal(
            shape.iter().product(),
            std,
            &mut tensor_rng(opts.seed, name),
        )
    };
    let fill = |shape: &[usize], v: f32| vec![v; shape.iter().product()];

    let (c, p) = (cfg.in_channels, cfg.patch_size);
    let shape = [d, c, p, p];
    put(
        "patch_embed.proj.weight".into(),
        &shape,
        normal("patch_embed.proj.weight", &shape, opts.std),
    )?;
    put("patch_embed.proj.bias".into(), &[d], fill(&[d], 0.0))?;
    if cfg.class_token {
        put(
            "cls_token".into(),
            &[1, 1, d],
            normal("cls_token", &[1, 1, d], 1e-6),
        )?;
    }
    if cfg.reg_tokens > 0 {
        let shape = [1, cfg.reg_tokens, d];
        put(
            "reg_token".into(),
            &shape,
            normal("reg_token", &shape, 1e-6),
        )?;
    }
    let len = cfg.pos_embed_len();
    let pos = if opts.sincos_pos_embed {
        let (gh, gw) = cfg.grid_size();
        // Prefix rows (class/register tokens) get zeros, as MAE and I-JEPA do.
        let mut table = vec![0.0; (len - gh * gw) * d];
        table.extend(pos_embed::sincos_2d(gh, gw, d, true));
        table
    } else {
        normal("pos_embed", &[1, len, d], opts.std)
    };
    put("pos_embed".into(), &[1, len, d], pos)?;

    let hidden = cfg.mlp_hidden_dim;
    for l in 0..cfg.depth {
        let rescale = if opts.rescale_depth {
            (2.0 * (l + 1) as f64).sqrt() as f32
        } else {
            1.0
        };
        let linears = [
            ("attn.qkv", 3 * d, d, 1.0, cfg.qkv_bias),
            ("attn.proj", d, d, rescale, true),
            ("mlp.fc1", hidden, d, 1.0, true),
            ("mlp.fc2", d, hidden, rescale, true),
        ];
        for (name, out_dim, in_dim, div, bias) in linears {
            let key = format!("blocks.{l}.{name}");
            let mut weight = normal(&format!("{key}.weight"), &[out_dim, in_dim], opts.std);
            weight.iter_mut().for_each(|v| *v /= div);
            put(format!("{key}.weight"), &[out_dim, in_dim], weight)?;
            if bias {
                put(format!("{key}.bias"), &[out_dim], fill(&[out_dim], 0.0))?;
            }
        }
        for norm in ["norm1", "norm2"] {
            put(format!("blocks.{l}.{norm}.weight"), &[d], fill(&[d], 1.0))?;
            put(format!("blocks.{l}.{norm}.bias"), &[d], fill(&[d], 0.0))?;
        }
        if let Some(gamma) = cfg.layer_scale {
            for ls in ["ls1", "ls2"] {
                put(
                    format!("blocks.{l}.{ls}.gamma"),
                    &[d],
                    fill(&[d], gamma as f32),
                )?;
            }
        }
    }
    let final_norm = if cfg.fc_norm { "fc_norm" } else { "norm" };
    put(format!("{final_norm}.weight"), &[d], fill(&[d], 1.0))?;
    put(format!("{final_norm}.bias"), &[d], fill(&[d], 0.0))?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> VitConfig {
        let mut cfg = VitConfig::from_timm_name("vit_tiny_patch16_224").unwrap();
        cfg.depth = 2;
        cfg
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
        let v = |m: &WeightMap| m[key].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&a), v(&b));
        assert_ne!(v(&a), v(&c));
        // std 0.02 over 110k draws.
        let x = v(&a);
        let var = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64;
        assert!((var.sqrt() - 0.02).abs() < 0.001, "{}", var.sqrt());
    }

    #[test]
    fn depth_rescale_divides_output_projections() {
        let plain = init_weights(&tiny(), &InitOptions::default(), &Device::Cpu).unwrap();
        let opts = InitOptions {
            rescale_depth: true,
            ..Default::default()
        };
        let scaled = init_weights(&tiny(), &opts, &Device::Cpu).unwrap();
        let ratio = |k: &str| {
            let a = plain[k].flatten_all().unwrap().to_vec1::<f32>().unwrap()[7];
            let b = scaled[k].flatten_all().unwrap().to_vec1::<f32>().unwrap()[7];
            a / b
        };
        assert!((ratio("blocks.1.mlp.fc2.weight") - 2.0).abs() < 1e-5); // √(2·2)
        assert!((ratio("blocks.0.attn.proj.weight") - 2f32.sqrt()).abs() < 1e-5);
        assert_eq!(ratio("blocks.1.attn.qkv.weight"), 1.0);
    }
}
