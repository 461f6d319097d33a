//! `y = x·Wᵀ + b` as one kernel with its own backward.
//!
//! candle's composition — the input reshaped to rows, a matmul against the
//! transposed weight, the bias add, the reshape back — is seven graph
//! edges, and candle's backward starts each edge's gradient as a zero
//! tensor and adds into it: the weight's gradient arrives as the
//! transposed product, added into zeros with a strided add. Here the
//! forward is one GEMM whose destination starts as the bias (as a GEMM
//! epilogue adds it), and the backward gives the three gradients
//! directly: `dx = dy·W`, `dW = dyᵀ·x` written straight into the weight's
//! `(out, in)` layout, `db` the column sums of `dy`.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::product::product_into;
use super::{column_sums, contiguous_f32, cpu_f32};

/// The geometry of one call: `rows` of `input` values to `output` values.
#[derive(Debug, Clone, Copy)]
struct Dims {
    rows: usize,
    input: usize,
    output: usize,
}

impl Dims {
    /// From the input's and weight's shapes, checking they agree.
    fn of(x: &Shape, w: &Shape) -> candle_core::Result<Self> {
        let (output, input) = w.dims2()?;
        let last = x.dims().last().copied().unwrap_or(0);
        if x.rank() == 0 || last != input {
            return Err(candle_core::Error::Msg(format!(
                "linear: input of shape {x:?} does not end in the weight's input width {input} (weight {w:?})"
            )));
        }
        Ok(Self {
            rows: x.dims()[..x.rank() - 1].iter().product(),
            input,
            output,
        })
    }

    /// The input's shape with its last dimension replaced by `width`.
    fn shape(x: &Shape, width: usize) -> Shape {
        let mut dims = x.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = width;
        }
        Shape::from(dims)
    }
}

fn threads() -> usize {
    rayon::current_num_threads()
}

/// `x·Wᵀ (+ b)` for `x` `(rows, input)`, `w` `(output, input)`.
fn forward(d: Dims, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let mut y = match b {
        Some(b) => b.repeat(d.rows),
        None => vec![0f32; d.rows * d.output],
    };
    if d.rows == 0 || d.input == 0 {
        return y;
    }
    // SAFETY: y is rows × output, x rows × input, w output × input (read
    // as its transpose by strides); shapes checked by `Dims::of`.
    unsafe {
        product_into(
            (d.rows, d.input, d.output),
            (y.as_mut_ptr(), d.output, 1),
            (x.as_ptr(), d.input, 1),
            (w.as_ptr(), 1, d.input),
            1.0,
            true,
            threads(),
        );
    }
    y
}

/// `dx = dy·W`: `(rows, output)·(output, input)`.
fn grad_input(d: Dims, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let mut dx = vec![0f32; d.rows * d.input];
    if d.rows == 0 || d.output == 0 {
        return dx;
    }
    // SAFETY: dx is rows × input, dy rows × output, w output × input.
    unsafe {
        product_into(
            (d.rows, d.output, d.input),
            (dx.as_mut_ptr(), d.input, 1),
            (dy.as_ptr(), d.output, 1),
            (w.as_ptr(), d.input, 1),
            1.0,
            false,
            threads(),
        );
    }
    dx
}

/// `dW = dyᵀ·x`: `(output, rows)·(rows, input)`, in the weight's layout.
fn grad_weight(d: Dims, dy: &[f32], x: &[f32]) -> Vec<f32> {
    let mut dw = vec![0f32; d.output * d.input];
    if d.rows == 0 {
        return dw;
    }
    // SAFETY: dw is output × input, dy rows × output (read as its transpose
    // by strides), x rows × input.
    unsafe {
        product_into(
            (d.output, d.rows, d.input),
            (dw.as_mut_ptr(), d.input, 1),
            (dy.as_ptr(), 1, d.output),
            (x.as_ptr(), d.input, 1),
            1.0,
            false,
            threads(),
        );
    }
    dw
}

struct WithBias;
struct NoBias;
/// Inputs `dy`, `w`; the result has the forward input's shape.
struct GradInput;
/// Inputs `dy`, `x`; the result has the weight's shape.
struct GradWeight;

/// The gradients of `x`, `w` and, `with_bias`, of the bias, from the
/// forward's inputs and the output gradient.
fn gradients(
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    with_bias: bool,
) -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
    let grad = grad.contiguous()?;
    let dx = grad.apply_op2_no_bwd(w, &GradInput)?;
    let dw = grad.apply_op2_no_bwd(x, &GradWeight)?;
    let db = if with_bias {
        let out = w.dim(0)?;
        Some(column_sums(
            &grad.reshape((grad.elem_count() / out.max(1), out))?,
        )?)
    } else {
        None
    };
    Ok((dx, dw, db))
}

impl CustomOp3 for WithBias {
    fn name(&self) -> &'static str {
        "ijepa-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1.shape(), l2.shape())?;
        let b = contiguous_f32(s3, l3)?;
        if b.len() != d.output {
            return Err(candle_core::Error::Msg(format!(
                "linear: bias of {} values for a weight of {} outputs",
                b.len(),
                d.output
            )));
        }
        let y = forward(d, contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?, Some(b));
        Ok((CpuStorage::F32(y), Dims::shape(l1.shape(), d.output)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = gradients(x, w, grad, true)?;
        Ok((Some(dx), Some(dw), db))
    }
}

impl CustomOp2 for NoBias {
    fn name(&self) -> &'static str {
        "ijepa-linear-no-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1.shape(), l2.shape())?;
        let y = forward(d, contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?, None);
        Ok((CpuStorage::F32(y), Dims::shape(l1.shape(), d.output)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = gradients(x, w, grad, false)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "ijepa-linear-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (output, input) = l2.shape().dims2()?;
        // `dy` ends in the weight's output width, as an input of `Wᵀ` would.
        let rows = Dims::of(l1.shape(), &Shape::from((input, output)))?.rows;
        let d = Dims {
            rows,
            input,
            output,
        };
        let dx = grad_input(d, contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        Ok((CpuStorage::F32(dx), Dims::shape(l1.shape(), input)))
    }
}

impl CustomOp2 for GradWeight {
    fn name(&self) -> &'static str {
        "ijepa-linear-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (dy, x) = (l1.shape().dims(), l2.shape().dims());
        let (Some((&output, lead)), Some((&input, x_lead))) = (dy.split_last(), x.split_last())
        else {
            return Err(candle_core::Error::Msg("linear: scalar gradient".into()));
        };
        let rows = x_lead.iter().product();
        if lead != x_lead {
            return Err(candle_core::Error::Msg(format!(
                "linear: output gradient {:?} does not match input {:?}",
                l1.shape(),
                l2.shape()
            )));
        }
        let d = Dims {
            rows,
            input,
            output,
        };
        let dw = grad_weight(d, contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        Ok((CpuStorage::F32(dw), Shape::from((output, input))))
    }
}

/// `x·Wᵀ + b` over the last dimension of `x` (any rank), weight
/// `(out, in)` and optional bias `(out)`, with a backward to all three —
/// f32 on the CPU outside an autocast scope; `None` otherwise, for the
/// caller's composition.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Option<Tensor>> {
    let f32_scope = crate::precision::current() == crate::precision::Precision::F32;
    if !(f32_scope && cpu_f32(x) && cpu_f32(w) && b.is_none_or(cpu_f32)) {
        return Ok(None);
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    Ok(Some(match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, WithBias)?,
        None => x.apply_op2(&w, NoBias)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::{abs_max, max_diff};
    use candle_core::{Device, Var};

    /// The candle composition the kernel replaces.
    fn composed(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
        let y = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        match b {
            Some(b) => y.broadcast_add(b).unwrap(),
            None => y,
        }
    }

    fn scale(a: &Tensor) -> f32 {
        abs_max(a).max(1e-6)
    }

    #[test]
    fn fused_linear_matches_the_composition_values_and_gradients() {
        let dev = Device::Cpu;
        for (i, (lead, input, output, bias)) in [
            (vec![1], 1, 1, true),
            (vec![3], 5, 7, false),
            (vec![2, 9], 16, 24, true),
            (vec![2, 3, 5], 13, 11, true),
            (vec![4, 50], 96, 288, true),
            (vec![1, 200], 64, 40, false),
        ]
        .into_iter()
        .enumerate()
        {
            let mut x_shape = lead.clone();
            x_shape.push(input);
            let x = Var::randn(0f32, 1.0, x_shape.as_slice(), &dev).unwrap();
            let w = Var::randn(0f32, 0.3, (output, input), &dev).unwrap();
            let b = Var::randn(0f32, 1.0, output, &dev).unwrap();
            let b = bias.then_some(b.as_tensor());
            let mut y_shape = lead.clone();
            y_shape.push(output);
            let probe = Tensor::randn(0f32, 1.0, y_shape.as_slice(), &dev).unwrap();

            let fused = linear(&x, &w, b).unwrap().expect("f32 on the CPU is fused");
            let reference = composed(&x, &w, b);
            assert_eq!(fused.dims(), reference.dims(), "case {i}");
            let tol = 1e-5 * scale(&reference);
            assert!(max_diff(&fused, &reference) <= tol, "case {i}: values");

            let g_fused = (fused * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g_ref = (reference * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let mut vars = vec![x.as_tensor(), w.as_tensor()];
            vars.extend(b);
            for (j, v) in vars.into_iter().enumerate() {
                let (a, r) = (g_fused.get(v).unwrap(), g_ref.get(v).unwrap());
                assert_eq!(a.dims(), v.dims(), "case {i}, input {j}: gradient shape");
                let err = max_diff(a, r);
                assert!(
                    err <= 1e-5 * scale(r),
                    "case {i}, input {j}: gradient off by {err}"
                );
            }
        }
    }

    #[test]
    fn other_inputs_are_left_to_the_composition_or_refused() {
        let dev = Device::Cpu;
        let x = Tensor::ones((2, 3), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::ones((4, 3), candle_core::DType::F32, &dev).unwrap();
        // bf16 tensors and an autocast scope are the composition's.
        let x16 = x.to_dtype(candle_core::DType::BF16).unwrap();
        assert!(linear(&x16, &w, None).unwrap().is_none());
        {
            let _bf16 = crate::precision::autocast(crate::precision::Precision::Bf16);
            assert!(linear(&x, &w, None).unwrap().is_none());
        }
        // A width that does not match the weight is an error naming both.
        let wrong = Tensor::ones((4, 5), candle_core::DType::F32, &dev).unwrap();
        let err = linear(&x, &wrong, None).unwrap_err().to_string();
        assert!(err.contains("[2, 3]") && err.contains("width 5"), "{err}");
        let short = Tensor::ones(3, candle_core::DType::F32, &dev).unwrap();
        let err = linear(&x, &w, Some(&short)).unwrap_err().to_string();
        assert!(
            err.contains("bias of 3 values") && err.contains("4 outputs"),
            "{err}"
        );
    }
}
