//! A run directory on disk: `config.toml`, `metrics.jsonl` ([`log`]) and its TensorBoard twin
//! ([`tensorboard`]), sample pictures ([`samples`]) and `checkpoints/` ([`checkpoint`]); its one writer ([`lock`]); how a one-process
//! task run enters one ([`start`]). Below the training loop, so that everything that reads runs (sampling,
//! evaluation, reports, experiments, the classifier's weights) shares one reader without
//! depending on training.

pub mod checkpoint;
pub mod lock;
pub mod log;
pub mod samples;
pub mod start;
pub mod tensorboard;
