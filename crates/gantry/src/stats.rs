//! Named scalar statistics of a step (`loss/d`, `am/cos`, `fq/b16/perplexity`): a slash-separated
//! name is something you read (config keys use dots).

use std::collections::BTreeMap;
use tch::Tensor;

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
