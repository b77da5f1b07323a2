//! gantry-metrics: FID, KID, Inception Score and precision/recall that reproduce the tools
//! people trust — pytorch-fid for FID, torch-fidelity for KID, IS and precision/recall, and
//! optionally clean-fid's preprocessing — on libtorch through `tch`. `docs/metrics.md` states
//! the protocol in words.
//!
//! The pieces, in the order data flows through them:
//! - [`torch_file`] reads weights (legacy and zip `torch.save`, safetensors), and
//!   [`module_pickle`] the pickled networks of stylegan2-ada-style code, running nothing;
//! - [`FidInception`] is pytorch-fid's Inception-v3 (pool3 and unbiased logits);
//! - [`preprocess()`] reproduces each tool's resize and scaling ([`Preprocessing`]);
//! - [`FeatureExtractor`] / [`InceptionExtractor`] batch images into [`Features`], which a
//!   [`FeatureSet`] accumulates and a [`FeatureCache`] keeps on disk;
//! - [`Stats`] (pytorch-fid `.npz`), [`frechet_distance`], [`kernel_inception_distance`],
//!   [`inception_score`] and [`precision_recall`] compute the numbers in f64.

// No `unwrap()` outside tests: user input reaches most paths, and a panic is never the answer to
// it (`expect` remains for invariants the code itself established, with the invariant as message).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod cache;
mod error;
mod features;
mod fid;
mod inception;
mod inception_score;
mod kid;
pub mod module_pickle;
pub mod npz;
mod numpy_rng;
mod ood;
pub mod pickle;
mod precision_recall;
mod preprocess;
mod stats;
pub mod torch_file;

pub use cache::{hash_bytes, weights_hash, FeatureCache};
pub use error::{MetricsError, FID_WEIGHTS_BYTES, FID_WEIGHTS_FILE};
pub use features::{FeatureExtractor, FeatureSet, Features, InceptionExtractor};
pub use fid::{frechet_distance, frechet_distance_eps, Fid, FID_EPS};
pub use inception::{FidInception, LOGITS_DIM, POOL3_DIM};
pub use inception_score::{inception_score, InceptionScore, IS_SEED, IS_SPLITS};
pub use kid::{kernel_inception_distance, kid_subsets, kid_with_subsets, Kid, KidOptions, Subsets};
pub use numpy_rng::NumpyRandomState;
pub use ood::{ood_metrics, OodMetrics};
pub use precision_recall::{precision_recall, PrecisionRecall, PR_NEIGHBOURS};
pub use preprocess::{
    pil_bicubic_weights, preprocess, quantize, resize_pil_bicubic, resize_tf1_bilinear,
    Preprocessing, INCEPTION_SIZE,
};
pub use stats::{MetricsWarning, Stats};
pub use torch_file::{default_weights_path, load_state_dict, weights_path, WEIGHTS_ENV};
