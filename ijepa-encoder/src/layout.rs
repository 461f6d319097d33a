//! The key layout of a model: named tensors ([`WeightMap`], timm's names
//! for the encoder), the names and shapes a constructor reads
//! ([`record_layout`]), and trainable variables over a map ([`to_varmap`]).

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::error::Result;

/// Named tensors, in timm's key layout.
pub type WeightMap = std::collections::HashMap<String, candle_core::Tensor>;

/// The dtype and device of the tensors of `weights` (f32 on the CPU when
/// there is none), for building a model over them.
pub fn dtype_device(weights: &WeightMap) -> (DType, Device) {
    match weights.values().next() {
        Some(t) => (t.dtype(), t.device().clone()),
        None => (DType::F32, Device::Cpu),
    }
}

/// Variables holding a copy of every tensor of `weights`, for training: a
/// model built over them with [`crate::VisionTransformer::from_varmap`] records
/// gradients for all of them (except a fixed position embedding).
pub fn to_varmap(weights: &WeightMap) -> Result<candle_nn::VarMap> {
    let varmap = candle_nn::VarMap::new();
    {
        let mut vars = varmap
            .data()
            .lock()
            .expect("a fresh VarMap is not poisoned");
        for (name, t) in weights {
            vars.insert(name.clone(), candle_core::Var::from_tensor(t)?);
        }
    }
    Ok(varmap)
}

/// The tensors of `varmap`'s variables, sharing their storage: they see
/// every later update of the variables.
pub fn var_tensors(varmap: &candle_nn::VarMap) -> WeightMap {
    varmap
        .data()
        .lock()
        .expect("VarMap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

/// What a constructor reads from its `VarBuilder`: names and shapes. The
/// tensors it gets are broadcast zeros (no memory), so any architecture can
/// be recorded.
#[derive(Default)]
struct Recorder(std::sync::Arc<std::sync::Mutex<Layout>>);

/// Tensor names and shapes, in the order a constructor reads them.
pub type Layout = Vec<(String, Vec<usize>)>;

impl candle_nn::var_builder::SimpleBackend for Recorder {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.push((name.to_string(), s.dims().to_vec()));
        candle_core::Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _: DType,
        _: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        candle_core::bail!("{name}: a shape is needed to record a tensor")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Every tensor `build` reads from a `VarBuilder`, with its shape, in the
/// order read: the key layout, stated once — by the constructors.
///
/// # Errors
/// What `build` returns.
pub fn record_layout<T>(build: impl FnOnce(VarBuilder) -> Result<T>) -> Result<Layout> {
    let seen = std::sync::Arc::default();
    let vb = VarBuilder::from_backend(
        Box::new(Recorder(std::sync::Arc::clone(&seen))),
        DType::F32,
        Device::Cpu,
    );
    build(vb)?;
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(seen)
}
