//! Images: finding (folders, tar shards), decoding, augmenting and batching them.

mod augment;
pub mod blur;
pub mod color;
mod error;
mod files;
mod folder;
pub mod loader;
mod resample;
mod shards;
mod synthetic;
mod transform;

pub use augment::{normalise, CropBox, TrainTransform};
pub use blur::RandomBlur;
pub use color::ColorDistortion;
pub use error::DataError;
pub use files::image_files;
pub use folder::{ImageFolder, ImageSource};
pub use loader::{BadImages, Batch, Loader, LoaderConfig, Position, Shard};
pub use resample::{resize, Filter};
pub use shards::{
    expand_braces, shard_paths, write_shards, TarShards, WrittenShards, MAX_SHARDS, SHARDS_MIXED,
};
pub use synthetic::{SyntheticShapes, NUM_CLASSES};
pub use transform::{decode_rgb, decode_rgb_bytes, EvalTransform, MAX_PIXELS, MAX_RESIZE};
