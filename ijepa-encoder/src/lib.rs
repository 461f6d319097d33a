//! The I-JEPA encoder: a Vision Transformer written for training on candle,
//! loading timm, Hugging Face `IJepaModel` and official I-JEPA weights.
//!
//! - [`VisionTransformer`] in timm's key layout, behind the [`TokenEncoder`]
//!   trait: a full forward, and a masked forward over kept patch indices (the
//!   lists `ijepa-masking` draws). Every operation on a training path has a
//!   backward: LayerNorm, GELU and softmax are fused CPU kernels with their
//!   own backward ([`kernels`]).
//! - [`VitConfig`], and [`registry`]: timm's ViT registry as data — every
//!   architecture timm defines, resolved as `timm.create_model` does.
//! - [`init`]: seeded initialisation (the official recipe).
//! - [`weights`]: layout detection, loading, checking and saving; [`layout`]:
//!   named tensors and the key layout a constructor reads.
//! - [`io`]: files in and out for every crate — how every file is written
//!   ([`io::output`]: atomically, never in place of anything but a regular
//!   file; the streaming safetensors writer), `hf-hub:org/name[@revision]`
//!   through the standard Hugging Face cache ([`io::hub`]), and PyTorch
//!   checkpoints read as data ([`io::torch`]).
//! - [`pos_embed`]: the 2-D sin-cos table and timm's resampling to other
//!   image sizes.
//!
//! It knows nothing of training: optimisers, EMA and losses live in
//! `ijepa-train`.
//!
//! # Example
//!
//! ```no_run
//! use candle_core::{DType, Device, Tensor};
//! use ijepa_encoder::weights::{load, LoadOptions};
//! use ijepa_encoder::TokenEncoder;
//!
//! let loaded = load("vit_huge_patch14_gap_224/".as_ref(), &LoadOptions::default())?;
//! let vit = loaded.build()?;
//! let images = Tensor::zeros((2, 3, 224, 224), DType::F32, &Device::Cpu)?;
//! let tokens = vit.forward(&images)?;          // (2, 256, 1280)
//! let features = vit.pool_patches(&tokens)?;   // (2, 1280)
//! # Ok::<(), ijepa_encoder::EncoderError>(())
//! ```
#![warn(missing_docs)]

mod block;
mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
mod error;
pub mod indices;
pub mod init;
pub mod io;
pub mod kernels;
pub mod layout;
mod nn;
mod patch_embed;
pub mod pos_embed;
pub mod precision;
pub mod registry;
mod vit;
pub mod weights;

pub use block::{Attention, Block, BlockConfig, Mlp};
pub use config::{
    check_size, patch_grid, Activation, MlpKind, Pool, PosEmbed, VitConfig, MAX_DEPTH, MAX_PATCHES,
    MAX_REGISTERS, MAX_WIDTH,
};
pub use error::{EncoderError, Result};
pub use layout::{dtype_device, WeightMap};
pub use nn::{LayerNorm, Linear};
pub use patch_embed::PatchEmbed;
pub use vit::{TokenEncoder, VisionTransformer};
