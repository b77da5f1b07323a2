//! Published PyTorch weights in, PyTorch-loadable weights out (`docs/interop.md`).
//!
//! **In.** [`import`] reads a foreign file into gantry's terms: an architecture's settings, the
//! data shape it was built for, and tensors under gantry's names for the stores `g`, `g_ema`
//! and `d`. Files are read as data only: network pickles go through gantry-metrics' restricted
//! unpickler, which builds values and never calls or imports anything, so a pickle's embedded
//! source code is never run. Classes and constructor arguments are recognised by name; anything
//! gantry's architectures cannot represent is refused by name.
//!
//! **Out.** [`export`] writes a run's networks under the reference implementation's names and
//! layouts, with the constructor arguments beside them in JSON.
//!
//! One file per code base: [`stylegan2`] (stylegan2-ada-pytorch and the AdaptiveMix code built on
//! it).

pub mod stylegan2;

use crate::error::{Error, Result};
use crate::models::{DataShape, ModelConfig};
use gantry_metrics::module_pickle::{self, PickleEntry, PickledModule};
use gantry_metrics::pickle::Value;
use std::collections::HashMap;
use std::path::Path;
use tch::Tensor;

/// Tensors by gantry name.
pub type Tensors = HashMap<String, Tensor>;

/// A foreign network file in gantry's terms.
pub struct Imported {
    pub model: ModelConfig,
    pub shape: DataShape,
    /// Tensors under gantry's names, by store: `g`, `g_ema`, `d` (those the file has).
    pub stores: Vec<(&'static str, Tensors)>,
    /// What the file is, for logs ("a stylegan2-ada-pytorch network pickle").
    pub origin: String,
    /// What the user should know about the translation (e.g. layers the reference ran in fp16).
    pub notes: Vec<String>,
}

impl Imported {
    pub fn store(&self, name: &str) -> Option<&Tensors> {
        self.stores.iter().find(|(n, _)| *n == name).map(|(_, t)| t)
    }

    /// The generator to sample: the EMA copy when asked for and present, else the raw one.
    pub fn generator_store(&self, ema: bool) -> Result<(&'static str, &Tensors)> {
        let order: &[&'static str] = if ema { &["g_ema", "g"] } else { &["g"] };
        order
            .iter()
            .find_map(|&n| self.store(n).map(|t| (n, t)))
            .ok_or_else(|| Error::config("--checkpoint", format!("{} holds no generator", self.origin)))
    }
}

/// Whether `path` names a foreign weights file rather than a gantry run or checkpoint directory.
pub fn is_foreign(path: &Path) -> bool {
    path.is_file()
}

/// Reads a foreign weights file (the format is sniffed from the content).
pub fn import(path: &Path) -> Result<Imported> {
    let head = read_head(path)?;
    if head.first() == Some(&0x80) && !head.starts_with(&LEGACY_TORCH_SAVE) {
        let entries = module_pickle::read_network_pickle(path)
            .map_err(|e| Error::Input {
                path: path.to_path_buf(),
                msg: e.to_string().trim_start_matches(&format!("{}: ", path.display())).to_string(),
            })?;
        return from_network_pickle(path, entries);
    }
    Err(Error::input(
        path,
        "is not a network gantry can import (expected a stylegan2-ada-pytorch network pickle)",
    ))
}

/// A legacy `torch.save` file starts with a pickled long (the magic number), not a dict.
const LEGACY_TORCH_SAVE: [u8; 3] = [0x80, 0x02, 0x8a];

fn read_head(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::input(path, e))?;
    let mut head = vec![0u8; 16];
    let n = f.read(&mut head).map_err(|e| Error::input(path, e))?;
    head.truncate(n);
    Ok(head)
}

fn from_network_pickle(path: &Path, entries: Vec<(String, PickleEntry)>) -> Result<Imported> {
    let modules: Vec<(&str, &PickledModule)> = entries
        .iter()
        .filter_map(|(k, e)| match e {
            PickleEntry::Module(m) => Some((k.as_str(), &**m)),
            PickleEntry::Value(_) => None,
        })
        .collect();
    let get = |name: &str| modules.iter().find(|(k, _)| *k == name).map(|(_, m)| *m);
    let Some(g) = get("G_ema").or_else(|| get("G")) else {
        if let Some((k, PickleEntry::Value(v))) =
            entries.iter().find(|(k, _)| k == "G_ema" || k == "G")
        {
            return Err(Error::input(
                path,
                format!(
                    "{k} is {}, not a network (refused; nothing in the file was run)",
                    module_pickle::describe(v)
                ),
            ));
        }
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        return Err(Error::input(
            path,
            format!(
                "is a pickle without a network G or G_ema (keys: {}); not a network snapshot",
                keys.join(", ")
            ),
        ));
    };
    if stylegan2::recognises(g) {
        return stylegan2::import(path, get("G"), get("G_ema"), get("D"));
    }
    Err(Error::input(
        path,
        format!(
            "its generator is a {} with arguments ({}), which gantry cannot import \
             (it reads stylegan2-ada-pytorch's training.networks.Generator)",
            g.class,
            g.init_kwargs
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// Constructor arguments, consumed one by one so that what is left can be refused by name.
pub(crate) struct Kwargs<'a> {
    what: String,
    items: Vec<(String, &'a Value)>,
}

impl<'a> Kwargs<'a> {
    /// `what` names the object in messages (`G`, `G.synthesis_kwargs`).
    pub fn new(what: impl Into<String>, items: &'a [(String, Value)]) -> Self {
        Kwargs {
            what: what.into(),
            items: items.iter().map(|(k, v)| (k.clone(), v)).collect(),
        }
    }

    /// A nested dict argument (`mapping_kwargs`), empty when absent.
    pub fn nested(&mut self, key: &str) -> Result<Kwargs<'a>> {
        let what = format!("{}.{key}", self.what);
        match self.take(key) {
            None | Some(Value::None) => Ok(Kwargs {
                what,
                items: Vec::new(),
            }),
            // An empty dict subclass (`dnnlib.EasyDict()`) stays a constructor call.
            Some(Value::Object { args, .. }) if args.as_seq().is_some_and(<[Value]>::is_empty) => {
                Ok(Kwargs {
                    what,
                    items: Vec::new(),
                })
            }
            Some(Value::Dict(d)) => Ok(Kwargs {
                what,
                items: d
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
                    .collect(),
            }),
            Some(other) => Err(self.bad(key, other, "a dict")),
        }
    }

    fn take(&mut self, key: &str) -> Option<&'a Value> {
        let i = self.items.iter().position(|(k, _)| k == key)?;
        Some(self.items.remove(i).1)
    }

    fn bad(&self, key: &str, v: &Value, want: &str) -> Error {
        Error::config(
            format!("{}.{key}", self.what),
            format!("is {}, expected {want}", show(v)),
        )
    }

    pub fn int(&mut self, key: &str, default: Option<i64>) -> Result<i64> {
        match self.take(key) {
            Some(Value::Int(i)) => Ok(*i),
            None | Some(Value::None) => default.ok_or_else(|| {
                Error::config(format!("{}.{key}", self.what), "missing (no default to assume)")
            }),
            Some(other) => Err(self.bad(key, other, "an integer")),
        }
    }

    pub fn float(&mut self, key: &str, default: f64) -> Result<f64> {
        match self.take(key) {
            Some(Value::Float(f)) => Ok(*f),
            Some(Value::Int(i)) => Ok(*i as f64),
            None | Some(Value::None) => Ok(default),
            Some(other) => Err(self.bad(key, other, "a number")),
        }
    }

    /// An argument that may be absent or `None` (`conv_clamp`).
    pub fn opt_float(&mut self, key: &str) -> Result<Option<f64>> {
        match self.take(key) {
            Some(Value::Float(f)) => Ok(Some(*f)),
            Some(Value::Int(i)) => Ok(Some(*i as f64)),
            None | Some(Value::None) => Ok(None),
            Some(other) => Err(self.bad(key, other, "a number or None")),
        }
    }

    pub fn string(&mut self, key: &str, default: &str) -> Result<String> {
        match self.take(key) {
            Some(Value::Str(s)) => Ok(s.clone()),
            None | Some(Value::None) => Ok(default.to_string()),
            Some(other) => Err(self.bad(key, other, "a string")),
        }
    }

    /// An argument gantry supports only at one value (`architecture = 'skip'`).
    pub fn require(&mut self, key: &str, supported: &Value, why: &str) -> Result<()> {
        match self.take(key) {
            None => Ok(()),
            Some(v) if v == supported || (*v == Value::None && *supported == Value::None) => Ok(()),
            Some(v) => Err(Error::config(
                format!("{}.{key}", self.what),
                format!("is {}; gantry supports only {} ({why})", show(v), show(supported)),
            )),
        }
    }

    /// Consumes an argument that changes nothing gantry computes (a memory layout).
    pub fn ignore(&mut self, key: &str) {
        self.take(key);
    }

    /// Refuses whatever was not consumed.
    pub fn finish(self) -> Result<()> {
        match self.items.first() {
            None => Ok(()),
            Some(_) => Err(Error::config(
                self.what.clone(),
                format!(
                    "unknown arguments {} (gantry maps only the arguments it can reproduce)",
                    self.items
                        .iter()
                        .map(|(k, v)| format!("{k}={}", show(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
}

/// A pickled value the way Python would print it, shortened.
pub(crate) fn show(v: &Value) -> String {
    let s = match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f}"),
        Value::Str(s) => format!("{s:?}"),
        Value::List(v) | Value::Tuple(v) => {
            format!("[{}]", v.iter().map(show).collect::<Vec<_>>().join(", "))
        }
        Value::Dict(kv) => format!(
            "{{{}}}",
            kv.iter()
                .map(|(k, v)| format!("{}: {}", show(k), show(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => module_pickle::describe(other),
    };
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// Copies tensors into a model's variables by name, refusing missing, extra and misshapen ones;
/// `origin` names the file in messages.
pub fn load_into(vars: &HashMap<String, Tensor>, tensors: &Tensors, origin: &Path) -> Result<()> {
    crate::rundir::checkpoint::restore_into(vars, tensors, origin)
}
