//! Basic layers whose every operation has a backward pass.
//!
//! candle's fused `layer_norm` has no backward and silently drops gradients
//! (`tests/gradients.rs` checks that every parameter receives one); it is
//! not used. Linear, LayerNorm, softmax and GELU run as our fused kernels,
//! which have a backward ([`crate::kernels`]): on the CPU
//! in f32, on a GPU (the `cuda` feature) LayerNorm, softmax, GELU and the
//! bias add; other devices, dtypes and autocast scopes use differentiable
//! compositions.

use candle_core::{Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::error::Result;

/// `y = x·Wᵀ + b` over the last dimension; weight `(out, in)` as in PyTorch.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Reads `{prefix}.weight` `(out, in)` and, if `bias`, `{prefix}.bias`.
    pub fn new(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// A layer from its tensors.
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// The `(out, in)` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(y) = crate::kernels::linear(x, &self.weight, self.bias.as_ref())? {
            return Ok(y);
        }
        // (..., in) -> (N, in) · (in, out) -> (..., out): one GEMM.
        let dims = x.dims();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim;
        // Inside an autocast scope the product is bf16 (precision.rs) and
        // the bias is added in f32 before the result is rounded to bf16 —
        // as a GEMM's epilogue adds it to its f32 accumulator — so the
        // bias gradient is summed in f32 too (`bias_add`). The weight is
        // cast before it is transposed: the product reads the transpose by
        // strides, so no transposed copy is made.
        let w = crate::precision::lowered(&self.weight)?;
        let x = crate::precision::lowered(&x.reshape((rows, in_dim))?)?;
        let y = x.matmul(&w.t()?)?;
        let y = match &self.bias {
            Some(b) => crate::kernels::bias_add(&y, b)?,
            None => y,
        };
        let mut out = dims.to_vec();
        *out.last_mut().expect("rank >= 1") = self.weight.dim(0)?;
        y.reshape(out)
    }
}

/// LayerNorm over the last dimension, with optional affine parameters.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    eps: f64,
}

impl LayerNorm {
    /// Reads `{prefix}.weight` and `{prefix}.bias` of width `dim`.
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: Some(vb.get(dim, "weight")?),
            bias: Some(vb.get(dim, "bias")?),
            eps,
        })
    }

    /// Normalisation without affine parameters (the I-JEPA target norm).
    pub fn plain(eps: f64) -> Self {
        Self {
            weight: None,
            bias: None,
            eps,
        }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // In f32 inside an autocast scope, as PyTorch's layer_norm.
        let x = &crate::precision::widened(x)?;
        if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
            if let Some(y) = crate::kernels::layer_norm(x, w, b, self.eps)? {
                return Ok(y);
            }
        }
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let x = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let x = match &self.weight {
            Some(w) => x.broadcast_mul(w)?,
            None => x,
        };
        match &self.bias {
            Some(b) => x.broadcast_add(b),
            None => Ok(x),
        }
    }
}
