//! I-JEPA with an encoder of your own: a small patch-MLP (no attention)
//! trained by the same step, masks and EMA as the ViT — the official
//! multi-block masks, our predictor, AdamW, the EMA teacher.
//!
//! ```sh
//! cargo run --release -p ijepa-train --example custom_encoder
//! ```
//!
//! An encoder needs two things: to be built over a candle `VarBuilder`
//! (keeping the tensors it hands out — the EMA updates the teacher's in
//! place), and [`TokenEncoder`]: its width, and tokens for all patches or
//! for the kept ones only (`forward_patches`; the rest has defaults).

use std::sync::Arc;

use candle_core::{Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use ijepa_encoder::indices::gather_tokens;
use ijepa_encoder::init::{init_layout, tensor_rng, trunc_normal, InitOptions};
use ijepa_encoder::layout::record_layout;
use ijepa_encoder::TokenEncoder;
use ijepa_masking::{Grid, MaskConfig, MaskSampler, SamplerKind};
use ijepa_predictor::{Predictor, PredictorConfig};
use ijepa_train::collective::SingleProcess;
use ijepa_train::data::{normalise, SyntheticShapes};
use ijepa_train::jepa::Jepa;
use ijepa_train::schedule::MOMENTUM;
use ijepa_train::step::{StepBatch, StepHyper, StepOutcome, TrainStep};
use ijepa_train::TrainConfig;

/// Image side, patch side and width of the example.
const IMAGE: usize = 36;
const PATCH: usize = 4;
const WIDTH: usize = 64;

/// Each patch projected, plus a learned position, then a residual MLP.
struct PatchMlp {
    proj: Linear,
    pos: Tensor,
    fc1: Linear,
    fc2: Linear,
}

impl PatchMlp {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let n = (IMAGE / PATCH).pow(2);
        Ok(Self {
            proj: candle_nn::linear(3 * PATCH * PATCH, WIDTH, vb.pp("proj"))?,
            pos: vb.get((1, n, WIDTH), "pos")?,
            fc1: candle_nn::linear(WIDTH, 2 * WIDTH, vb.pp("fc1"))?,
            fc2: candle_nn::linear(2 * WIDTH, WIDTH, vb.pp("fc2"))?,
        })
    }

    /// `(B, 3, H, W)` → `(B, N, 3·p·p)`, patches row by row.
    fn patches(images: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = images.dims4()?;
        let (gh, gw) = (h / PATCH, w / PATCH);
        images
            .reshape((b, c, gh, PATCH, gw, PATCH))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, gh * gw, c * PATCH * PATCH))
    }
}

impl TokenEncoder for PatchMlp {
    fn embed_dim(&self) -> usize {
        WIDTH
    }

    fn forward_patches(
        &self,
        images: &Tensor,
        kept: Option<&Tensor>,
    ) -> ijepa_encoder::Result<Tensor> {
        let x = self
            .proj
            .forward(&Self::patches(images)?)?
            .broadcast_add(&self.pos)?;
        let x = match kept {
            None => x,
            // The kept patches' tokens, as the ViT selects them.
            Some(idx) => gather_tokens(&x, idx)?,
        };
        let h = self.fc2.forward(&self.fc1.forward(&x)?.gelu_erf()?)?;
        Ok((x + h)?)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let seed = 0;
    let grid = Grid::new_2d(IMAGE / PATCH, IMAGE / PATCH)?;
    let sampler: Arc<dyn MaskSampler> =
        Arc::from(MaskConfig::default().build(grid, SamplerKind::MultiBlock, seed)?);

    // Seeded initial weights for any layout: the names and shapes the
    // constructor reads, each drawn by rule (Linears truncated-normal,
    // biases 0); the position table has no rule, so it is given here.
    let layout = record_layout(|vb| Ok(PatchMlp::new(vb)?))?;
    let opts = InitOptions {
        seed,
        ..InitOptions::default()
    };
    let encoder = init_layout(&layout, &opts, "", &device, |name, shape| {
        (name == "pos")
            .then(|| trunc_normal(shape.iter().product(), 0.02, &mut tensor_rng(seed, name)))
    })?;
    // The official predictor, sized for this encoder.
    let predictor_cfg = PredictorConfig {
        embed_dim: WIDTH,
        predictor_embed_dim: 64,
        depth: 2,
        num_heads: 2,
        mlp_hidden_dim: 256,
        grid: (IMAGE / PATCH, IMAGE / PATCH),
        column_first: true,
        norm_eps: 1e-6,
    };
    let predictor = ijepa_predictor::init_weights(&predictor_cfg, &opts, &device)?;

    let parts = Jepa::from_weights(sampler.clone(), encoder, PatchMlp::new, predictor, |vb| {
        Predictor::new(&predictor_cfg, vb)
    })?
    // The predictor's position table is a constant: not among what trains.
    .with_frozen(Predictor::FIXED.iter().map(|k| format!("predictor.{k}")));
    let weight_decay = 0.04;
    let mut step = TrainStep::new(parts, weight_decay, None, Box::new(SingleProcess));

    // Synthetic garments, normalised as `pretrain` normalises its images.
    let data = SyntheticShapes::new(IMAGE as u32, 512, seed);
    let (mean, std) = (
        TrainConfig::default().data.mean,
        TrainConfig::default().data.std,
    );
    let batch_size = 32;
    let steps = 60;
    let mut losses = vec![];
    for s in 0..steps {
        let pixels: Vec<f32> = (0..batch_size)
            .flat_map(|i| normalise(&data.get((s * batch_size + i) % data.len()).0, mean, std))
            .collect();
        let images = Tensor::from_vec(pixels, (batch_size, 3, IMAGE, IMAGE), &device)?;
        let masks = sampler.sample(batch_size, s as u64);
        let batch = StepBatch::new(images, &masks)?;
        let hyper = StepHyper {
            lr: 1e-3,
            weight_decay,
            momentum: MOMENTUM.0,
        };
        match step.run(&[batch], hyper)? {
            StepOutcome::Applied(r) => losses.push(r.loss),
            StepOutcome::Refused(why) => return Err(why.into()),
        }
        if s % 10 == 0 || s + 1 == steps {
            println!("step {s:>3}  loss {:.4}", losses[losses.len() - 1]);
        }
    }
    let first: f32 = losses[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = losses[losses.len() - 10..].iter().sum::<f32>() / 10.0;
    println!("mean loss of the first 10 steps {first:.4}, of the last 10 {last:.4}");
    if last.partial_cmp(&first) != Some(std::cmp::Ordering::Less) {
        return Err("the loss did not go down".into());
    }
    Ok(())
}
