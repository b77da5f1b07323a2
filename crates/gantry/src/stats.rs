//! Named scalar statistics of a step (`loss/d`, `am/cos`, `fq/b16/perplexity`): a slash-separated
//! name is something you read (config keys use dots).

use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// Scalar tensors stacked into one `[n]` f64 tensor where they live, so that one host read (or
/// one collective) serves them all.
pub fn stack_scalars<'a>(values: impl IntoIterator<Item = &'a Tensor>) -> Tensor {
    let values: Vec<Tensor> = values
        .into_iter()
        .map(|v| v.detach().to_kind(Kind::Double).reshape([]))
        .collect();
    Tensor::stack(&values, 0)
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    values: BTreeMap<String, f64>,
}

impl Stats {
    pub fn set(&mut self, key: impl Into<String>, value: f64) {
        self.values.insert(key.into(), value);
    }
    /// Records a scalar tensor (one device sync per call: use on logging steps only).
    pub fn set_tensor(&mut self, key: impl Into<String>, value: &Tensor) {
        self.set(key, crate::util::read_f64(value));
    }
    /// Sets each name to its value of `stacked` ([`stack_scalars`]), read in one host read.
    pub fn set_stacked<'a>(&mut self, names: impl IntoIterator<Item = &'a str>, stacked: &Tensor) {
        for (k, v) in names.into_iter().zip(crate::util::read_vec(stacked)) {
            self.set(k, v);
        }
    }
    /// Named scalar tensors, read in one host read (logging steps only).
    pub fn read_all<'a>(parts: impl IntoIterator<Item = (&'a str, &'a Tensor)> + Clone) -> Stats {
        let mut stats = Stats::default();
        let stacked = stack_scalars(parts.clone().into_iter().map(|(_, v)| v));
        stats.set_stacked(parts.into_iter().map(|(k, _)| k), &stacked);
        stats
    }
    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).copied()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &f64)> {
        self.values.iter()
    }
    pub fn extend(&mut self, other: Stats) {
        self.values.extend(other.values);
    }
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}
