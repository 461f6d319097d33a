//! Seeded initialisation of the predictor (the official effective init).

use candle_core::{Device, Tensor};
use ijepa_encoder::init::{tensor_rng, trunc_normal, InitOptions};
use ijepa_encoder::{pos_embed, Result, WeightMap};

use crate::PredictorConfig;

/// Fresh predictor weights under the official names: Linear weights and the
/// mask token truncated-normal (`opts.std`), biases 0, LayerNorms (1, 0), the
/// sin-cos position table; with `opts.rescale_depth`, `attn.proj` and
/// `mlp.fc2` of block `l` divided by `√(2l)` (stable-pretraining). Draws are
/// keyed by `opts.seed` and the tensor name, with a `predictor.` domain so
/// they never coincide with the encoder's.
pub fn init_weights(
    cfg: &PredictorConfig,
    opts: &InitOptions,
    device: &Device,
) -> Result<WeightMap> {
    cfg.validate()?;
    let (big, d, h) = (cfg.embed_dim, cfg.predictor_embed_dim, cfg.mlp_hidden_dim);
    let mut w = WeightMap::new();
    let mut put = |name: String, shape: &[usize], data: Vec<f32>| -> Result<()> {
        w.insert(name, Tensor::from_vec(data, shape, device)?);
        Ok(())
    };
    let normal = |name: &str, n: usize| {
        trunc_normal(
            n,
            opts.std,
            &mut tensor_rng(opts.seed, &format!("predictor.{name}")),
        )
    };
    let zeros = |n: usize| vec![0f32; n];

    put(
        "predictor_embed.weight".into(),
        &[d, big],
        normal("predictor_embed.weight", d * big),
    )?;
    put("predictor_embed.bias".into(), &[d], zeros(d))?;
    put("mask_token".into(), &[1, 1, d], normal("mask_token", d))?;
    let (rows, cols) = cfg.grid;
    put(
        "predictor_pos_embed".into(),
        &[1, rows * cols, d],
        pos_embed::sincos_2d(rows, cols, d, cfg.column_first),
    )?;
    for l in 0..cfg.depth {
        let div = if opts.rescale_depth {
            (2.0 * (l + 1) as f64).sqrt() as f32
        } else {
            1.0
        };
        for (name, out_dim, in_dim, scale) in [
            ("attn.qkv", 3 * d, d, 1.0),
            ("attn.proj", d, d, div),
            ("mlp.fc1", h, d, 1.0),
            ("mlp.fc2", d, h, div),
        ] {
            let key = format!("predictor_blocks.{l}.{name}");
            let mut weight = normal(&format!("{key}.weight"), out_dim * in_dim);
            weight.iter_mut().for_each(|v| *v /= scale);
            put(format!("{key}.weight"), &[out_dim, in_dim], weight)?;
            put(format!("{key}.bias"), &[out_dim], zeros(out_dim))?;
        }
        for norm in ["norm1", "norm2"] {
            put(
                format!("predictor_blocks.{l}.{norm}.weight"),
                &[d],
                vec![1.0; d],
            )?;
            put(format!("predictor_blocks.{l}.{norm}.bias"), &[d], zeros(d))?;
        }
    }
    put("predictor_norm.weight".into(), &[d], vec![1.0; d])?;
    put("predictor_norm.bias".into(), &[d], zeros(d))?;
    put(
        "predictor_proj.weight".into(),
        &[big, d],
        normal("predictor_proj.weight", big * d),
    )?;
    put("predictor_proj.bias".into(), &[big], zeros(big))?;
    Ok(w)
}
