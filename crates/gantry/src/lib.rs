//! gantry: train, evaluate and sample GANs with first-class discriminator plug-ins (AdaptiveMix,
//! Feature Quantization) on any backbone and any loss, on libtorch via `tch`.
//!
//! Layers, from the bottom: [`error`], [`device`], [`models`] (G/D with the `embed`/`head` seam),
//! [`plugins`] (wrap any D), [`loss`] (what a phase computes), [`train`] (when it runs),
//! [`config`] (one `RunConfig`), [`run`] (what the CLI calls).

pub mod bench;
pub mod classifier;
pub mod config;
pub mod device;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod loss;
pub mod models;
pub mod nn;
pub mod plugins;
pub mod report;
pub mod run;
pub mod stats;
pub mod train;
pub mod util;

pub use config::RunConfig;
pub use error::{Error, Result};
pub use gantry_data as data;
pub use tch;
