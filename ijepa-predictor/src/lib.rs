//! The I-JEPA predictor: a narrow transformer that predicts target-block
//! representations from context tokens.
//!
//! **Not yet implemented** — this crate is a placeholder in the workspace so
//! that the crate map is fixed from the start. It will hold (issue #4):
//!
//! - the official predictor (Linear D→d, predictor position embedding, one
//!   sequence per target block `[context ; mask tokens]`, Linear d→D);
//! - the stable-pretraining ("seed") variant (one joint sequence over the
//!   union of target blocks);
//! - a small predictor trait: context tokens + context indices + target
//!   indices → predictions, built on the layers of `ijepa-encoder`.
//!
//! It will know nothing of training.
