//! The I-JEPA encoder: a Vision Transformer written for training on candle.
//!
//! **Not yet implemented** — this crate is a placeholder in the workspace so
//! that the crate map is fixed from the start. It will hold (issue #3):
//!
//! - ViT layers whose every op has a backward (patch embedding, fused-qkv
//!   attention, exact-GELU MLP, pre-norm blocks, final norm), fixed 2-D
//!   sin-cos or learned position embeddings;
//! - presets for the timm ViT names (`vit_small_patch16_224`,
//!   `vit_huge_patch14_gap_224`, …) and a config struct for anything else;
//! - a small token-encoder trait: images `(B, C, H, W)` → tokens `(B, N, D)`,
//!   and a masked forward over kept patch indices `[B, K]` (the index lists
//!   produced by `ijepa-masking`);
//! - weight I/O with layout detection (timm safetensors, Hugging Face
//!   `IJepaModel`, official `.pth.tar`) and Hugging Face Hub resolution.
//!
//! It will know nothing of training: optimisers, EMA and losses live in
//! `ijepa-train`.
