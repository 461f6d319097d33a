//! The pre-norm transformer block of timm's ViT: attention and MLP.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::Result;
use crate::kernels::{gelu_erf, softmax_last_dim};
use crate::nn::{LayerNorm, Linear};

/// Multi-head self-attention with a fused qkv projection (rows `q | k | v`,
/// head-major inside each).
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
    scale: f64,
}

impl Attention {
    /// Reads `{prefix}.qkv` `(3D, D)` and `{prefix}.proj` `(D, D)`.
    pub fn new(dim: usize, num_heads: usize, qkv_bias: bool, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            qkv: Linear::new(dim, 3 * dim, qkv_bias, vb.pp("qkv"))?,
            proj: Linear::new(dim, dim, true, vb.pp("proj"))?,
            num_heads,
            scale: ((dim / num_heads) as f64).powf(-0.5),
        })
    }
}

impl Module for Attention {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let h = self.num_heads;
        // (B, N, 3D) -> (3, B, heads, N, D/heads)
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, n, 3, h, d / h))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)?.contiguous()? * self.scale)?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        // (B, heads, N, N)
        let attn = softmax_last_dim(&q.matmul(&k.t()?)?)?;
        // (B, heads, N, D/heads) -> (B, N, D)
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, n, d))?;
        self.proj.forward(&out)
    }
}

/// fc1 → exact (erf) GELU → fc2.
#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    /// Reads `{prefix}.fc1` `(hidden, D)` and `{prefix}.fc2` `(D, hidden)`.
    pub fn new(dim: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(dim, hidden, true, vb.pp("fc1"))?,
            fc2: Linear::new(hidden, dim, true, vb.pp("fc2"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&gelu_erf(&self.fc1.forward(x)?)?)
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
    /// Layer scale (`ls1.gamma`, `ls2.gamma`) present.
    pub layer_scale: bool,
    /// LayerNorm epsilon.
    pub norm_eps: f64,
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
            attn: Attention::new(cfg.dim, cfg.num_heads, cfg.qkv_bias, vb.pp("attn"))?,
            ls1: scale("ls1")?,
            norm2: LayerNorm::new(cfg.dim, cfg.norm_eps, vb.pp("norm2"))?,
            mlp: Mlp::new(cfg.dim, cfg.mlp_hidden_dim, vb.pp("mlp"))?,
            ls2: scale("ls2")?,
        })
    }
}

fn scaled(x: Tensor, gamma: &Option<Tensor>) -> candle_core::Result<Tensor> {
    match gamma {
        Some(g) => x.broadcast_mul(g),
        None => Ok(x),
    }
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = (x + scaled(self.attn.forward(&self.norm1.forward(x)?)?, &self.ls1)?)?;
        &x + scaled(self.mlp.forward(&self.norm2.forward(&x)?)?, &self.ls2)?
    }
}
