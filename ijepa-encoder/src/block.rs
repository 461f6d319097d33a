//! The pre-norm transformer block of timm's ViT: attention and MLP.

use candle_core::{Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::config::{Activation, MlpKind};
use crate::error::Result;
use crate::kernels::{gelu_erf, softmax_scores};
use crate::nn::{LayerNorm, Linear};
use crate::precision::{matmul, promoted};

/// Multi-head self-attention with a fused qkv projection (rows `q | k | v`,
/// head-major inside each), as timm's `Attention`.
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Linear,
    q_norm: Option<LayerNorm>,
    k_norm: Option<LayerNorm>,
    norm: Option<LayerNorm>,
    proj: Linear,
    num_heads: usize,
    scale: f64,
}

impl Attention {
    /// Reads `{prefix}.qkv` `(3D, D)`, `{prefix}.proj` `(D, D)`, and with
    /// `qk_norm` `{prefix}.q_norm`/`k_norm` (per head), with `scale_norm`
    /// `{prefix}.norm` (before the projection).
    pub fn new(cfg: &BlockConfig, vb: VarBuilder) -> Result<Self> {
        let (dim, h) = (cfg.dim, cfg.num_heads);
        let norm = |on: bool, width: usize, name: &str| -> Result<Option<LayerNorm>> {
            on.then(|| LayerNorm::new(width, cfg.norm_eps, vb.pp(name)))
                .transpose()
        };
        Ok(Self {
            qkv: Linear::new(dim, 3 * dim, cfg.qkv_bias, vb.pp("qkv"))?,
            q_norm: norm(cfg.qk_norm, dim / h, "q_norm")?,
            k_norm: norm(cfg.qk_norm, dim / h, "k_norm")?,
            norm: norm(cfg.scale_attn_norm, dim, "norm")?,
            proj: Linear::new(dim, dim, cfg.proj_bias, vb.pp("proj"))?,
            num_heads: h,
            scale: ((dim / h) as f64).powf(-0.5),
        })
    }
}

fn apply(norm: &Option<LayerNorm>, x: Tensor) -> candle_core::Result<Tensor> {
    match norm {
        Some(n) => n.forward(&x),
        None => Ok(x),
    }
}

impl Module for Attention {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let h = self.num_heads;
        let qkv = self.qkv.forward(x)?;
        if self.q_norm.is_none() && self.k_norm.is_none() {
            // One fused kernel (f32 on the CPU), forward and backward.
            if let Some(out) = crate::kernels::attention(&qkv, h, self.scale)? {
                return self.proj.forward(&apply(&self.norm, out)?);
            }
        }
        // (B, N, 3D) -> (3, B, heads, N, D/heads)
        let qkv = qkv.reshape((b, n, 3, h, d / h))?.permute((2, 0, 3, 1, 4))?;
        let q = (apply(&self.q_norm, qkv.get(0)?.contiguous()?)? * self.scale)?;
        let k = apply(&self.k_norm, qkv.get(1)?.contiguous()?)?;
        let v = qkv.get(2)?.contiguous()?;
        // (B, heads, N, N): the products in the autocast dtype, softmax in
        // f32 (PyTorch's autocast lists).
        let attn = softmax_scores(&matmul(&q, &k.t()?)?)?;
        // (B, heads, N, D/heads) -> (B, N, D)
        let out = matmul(&attn, &v)?.transpose(1, 2)?.reshape((b, n, d))?;
        self.proj.forward(&apply(&self.norm, out)?)
    }
}

/// fc1 → activation (exact GELU by default) → (norm) → fc2, as timm's
/// `Mlp`; or timm's `GluMlp`, gate first (fc1's halves `(a, b)` → `act(a)·b`).
#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    activation: Activation,
    kind: MlpKind,
    norm: Option<LayerNorm>,
    fc2: Linear,
}

impl Mlp {
    /// Reads `{prefix}.fc1` `(hidden, D)`, `{prefix}.fc2` `(D, hidden)`
    /// (`(D, hidden/2)` for the GLU) and, with `scale_mlp_norm`,
    /// `{prefix}.norm`.
    pub fn new(cfg: &BlockConfig, vb: VarBuilder) -> Result<Self> {
        let (dim, hidden) = (cfg.dim, cfg.mlp_hidden_dim);
        let inner = match cfg.mlp {
            MlpKind::Plain => hidden,
            MlpKind::Glu => hidden / 2,
        };
        Ok(Self {
            fc1: Linear::new(dim, hidden, cfg.proj_bias, vb.pp("fc1"))?,
            activation: cfg.activation,
            kind: cfg.mlp,
            norm: cfg
                .scale_mlp_norm
                .then(|| LayerNorm::new(inner, cfg.norm_eps, vb.pp("norm")))
                .transpose()?,
            fc2: Linear::new(inner, dim, cfg.proj_bias, vb.pp("fc2"))?,
        })
    }
}

/// The activation, every form with a backward pass.
fn activate(x: &Tensor, a: Activation) -> candle_core::Result<Tensor> {
    match a {
        Activation::Gelu => gelu_erf(x),
        // candle's `gelu` is the tanh approximation (with a backward).
        Activation::GeluTanh => x.gelu(),
        // x·σ(1.702x), composed so it differentiates.
        Activation::QuickGelu => x.mul(&((x * -1.702)?.exp()? + 1.0)?.recip()?),
        Activation::Silu => x.silu(),
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.fc1.forward(x)?;
        let h = match self.kind {
            MlpKind::Plain => activate(&h, self.activation)?,
            MlpKind::Glu => {
                let half = h.dim(D::Minus1)? / 2;
                let (a, b) = (
                    h.narrow(D::Minus1, 0, half)?,
                    h.narrow(D::Minus1, half, half)?,
                );
                activate(&a, self.activation)?.mul(&b)?
            }
        };
        self.fc2.forward(&apply(&self.norm, h)?)
    }
}

/// Hyper-parameters of one block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockConfig {
    /// Token width.
    pub dim: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// MLP hidden width.
    pub mlp_hidden_dim: usize,
    /// Bias in the qkv projection.
    pub qkv_bias: bool,
    /// LayerNorm of queries and keys per head.
    pub qk_norm: bool,
    /// LayerNorm of the attention output before its projection.
    pub scale_attn_norm: bool,
    /// LayerNorm of the MLP's hidden layer.
    pub scale_mlp_norm: bool,
    /// Bias in the attention projection and both MLP layers.
    pub proj_bias: bool,
    /// MLP activation.
    pub activation: Activation,
    /// The MLP's form.
    pub mlp: MlpKind,
    /// Layer scale (`ls1.gamma`, `ls2.gamma`) present.
    pub layer_scale: bool,
    /// LayerNorm epsilon.
    pub norm_eps: f64,
}

impl BlockConfig {
    /// A plain pre-norm block (qkv and projection biases, exact GELU, no
    /// extra norms), as the official I-JEPA predictor's.
    pub fn plain(dim: usize, num_heads: usize, mlp_hidden_dim: usize, norm_eps: f64) -> Self {
        Self {
            dim,
            num_heads,
            mlp_hidden_dim,
            qkv_bias: true,
            qk_norm: false,
            scale_attn_norm: false,
            scale_mlp_norm: false,
            proj_bias: true,
            activation: Activation::Gelu,
            mlp: MlpKind::Plain,
            layer_scale: false,
            norm_eps,
        }
    }
}

/// Pre-norm block: `x += ls1·attn(norm1(x)); x += ls2·mlp(norm2(x))`.
#[derive(Debug, Clone)]
pub struct Block {
    norm1: LayerNorm,
    attn: Attention,
    ls1: Option<Tensor>,
    norm2: LayerNorm,
    mlp: Mlp,
    ls2: Option<Tensor>,
}

impl Block {
    /// Reads `{prefix}.{norm1,attn,ls1,norm2,mlp,ls2}` in timm's layout.
    pub fn new(cfg: &BlockConfig, vb: VarBuilder) -> Result<Self> {
        let scale = |name: &str| -> Result<Option<Tensor>> {
            Ok(if cfg.layer_scale {
                Some(vb.pp(name).get(cfg.dim, "gamma")?)
            } else {
                None
            })
        };
        Ok(Self {
            norm1: LayerNorm::new(cfg.dim, cfg.norm_eps, vb.pp("norm1"))?,
            attn: Attention::new(cfg, vb.pp("attn"))?,
            ls1: scale("ls1")?,
            norm2: LayerNorm::new(cfg.dim, cfg.norm_eps, vb.pp("norm2"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            ls2: scale("ls2")?,
        })
    }
}

fn scaled(x: Tensor, gamma: &Option<Tensor>) -> candle_core::Result<Tensor> {
    match gamma {
        Some(g) => {
            let (x, g) = promoted(&x, g)?;
            x.broadcast_mul(&g)
        }
        None => Ok(x),
    }
}

/// `x + y`, promoted to f32 when one is a bf16 activation.
fn residual(x: &Tensor, y: Tensor) -> candle_core::Result<Tensor> {
    let (x, y) = promoted(x, &y)?;
    x + y
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = residual(
            x,
            scaled(self.attn.forward(&self.norm1.forward(x)?)?, &self.ls1)?,
        )?;
        residual(
            &x,
            scaled(self.mlp.forward(&self.norm2.forward(&x)?)?, &self.ls2)?,
        )
    }
}
