//! Seeded initialisation of the predictor.

use candle_core::Device;
use ijepa_encoder::init::{init_layout, tensor_rng, trunc_normal, InitOptions};
use ijepa_encoder::layout::record_layout;
use ijepa_encoder::{pos_embed, Result, WeightMap};

use crate::{Predictor, PredictorConfig};

/// Fresh predictor weights under the official names (the layout
/// [`Predictor::new`] reads): Linears per `opts.scheme` (the official
/// truncated normal, or PyTorch's default as stable-pretraining keeps it)
/// with the depth rescale of `attn.proj` / `mlp.fc2` when
/// `opts.rescale_depth`, LayerNorms (1, 0), the mask token
/// `N(0, 0.02²)`, the sin-cos position table. Draws are keyed by
/// `opts.seed` and the tensor name, with a `predictor.` domain so they
/// never coincide with the encoder's.
///
/// # Errors
/// A configuration that does not validate.
pub fn init_weights(
    cfg: &PredictorConfig,
    opts: &InitOptions,
    device: &Device,
) -> Result<WeightMap> {
    cfg.validate()?;
    let layout = record_layout(|vb| Predictor::new(cfg, vb))?;
    init_layout(
        &layout,
        opts,
        "predictor.",
        device,
        |name, shape| match name {
            "mask_token" => Some(trunc_normal(
                shape.iter().product(),
                0.02,
                &mut tensor_rng(opts.seed, "predictor.mask_token"),
            )),
            "predictor_pos_embed" => {
                let (rows, cols) = cfg.grid;
                Some(pos_embed::sincos_2d(
                    rows,
                    cols,
                    cfg.predictor_embed_dim,
                    cfg.column_first,
                ))
            }
            _ => None,
        },
    )
}
