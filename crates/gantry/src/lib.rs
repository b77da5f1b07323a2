//! gantry: train, evaluate and sample GANs with first-class discriminator plug-ins (AdaptiveMix,
//! Feature Quantization) on any backbone and any loss, on libtorch via `tch`.
//!
//! Layers, from the bottom (imports only go up the list; `tests/layering.rs` checks it):
//! [`error`], [`util`], [`stats`], [`device`], [`dist`], [`precision`], [`nn`], [`models`] (G/D with the `embed`/`head`
//! seam; each architecture owns its settings), [`plugins`] (wrap any D), [`loss`] (what a phase
//! computes), [`rundir`] (checkpoints, the metrics log, samples on disk), [`classify`] (classification,
//! attacks, OOD detection; also the feature network of classifier-feature FID),
//! [`eval`], [`train`] (when each phase runs), [`translate`] (unpaired image translation:
//! U-GAT-IT with the plug-ins), [`report`], [`config`] (one `RunConfig` composed of
//! the modules' settings), [`interop`] (foreign weights in, reference-named weights out), [`generate`] (seeds, truncation,
//! interpolation, style mixing), then the entry points [`run`], [`bench`], [`experiment`].

// No `unwrap()` outside tests: user input reaches most paths, and a panic is never the answer to
// it (`expect` remains for invariants the code itself established, with the invariant as message).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod bench;
pub mod classify;
pub mod config;
pub mod device;
pub mod dist;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod generate;
pub mod interop;
pub mod loss;
pub mod models;
pub mod nn;
pub mod plugins;
pub mod precision;
pub mod report;
pub mod run;
pub mod rundir;
pub mod stats;
pub mod train;
pub mod translate;
pub mod util;

pub use config::RunConfig;
pub use error::{Error, Result};
pub use gantry_data as data;
pub use tch;
