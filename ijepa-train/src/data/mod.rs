//! Images: finding, decoding and preparing them.

mod error;
mod files;
mod resample;
mod synthetic;
mod transform;

pub use error::DataError;
pub use files::image_files;
pub use resample::{resize, Filter};
pub use synthetic::{SyntheticShapes, NUM_CLASSES};
pub use transform::{decode_rgb, EvalTransform};
