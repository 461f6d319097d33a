//! What the parity tests share: fixtures, prefixes, differences.
#![allow(dead_code)] // each test file uses its part

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use ijepa_encoder::WeightMap;

/// The tensors of `tests/fixtures/{name}.safetensors`.
pub fn fixture(name: &str) -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.safetensors"));
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// The tensors named `{prefix}…`, without the prefix.
pub fn prefixed(fx: &HashMap<String, Tensor>, prefix: &str) -> WeightMap {
    fx.iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
        .collect()
}

/// The largest magnitude in `t`.
pub fn abs_max(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// The largest elementwise difference of two tensors of one shape.
pub fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    abs_max(&(a - b).unwrap())
}
