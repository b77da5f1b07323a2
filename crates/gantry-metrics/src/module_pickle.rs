//! Reads pickled PyTorch modules without running any Python: the network pickles of
//! stylegan2-ada-pytorch (`network-snapshot-*.pkl`: a dict with `G`, `D`, `G_ema`,
//! `augment_pipe`, `training_set_kwargs`), also written by the AdaptiveMix and R3GAN code bases.
//!
//! Their networks are wrapped by `torch_utils.persistence`: a module pickles as
//! `_reconstruct_persistent_obj(meta)` with `meta = {type, version, module_src, class_name,
//! state}`, where `module_src` is the class's Python source (never executed here) and `state` the
//! module's `__dict__`: `_parameters`, `_buffers`, `_non_persistent_buffers_set`, `_modules`,
//! the constructor's `_init_args` / `_init_kwargs`, and plain attributes. Sub-modules are either
//! persistent too or ordinary classes (`NEWOBJ` + `BUILD` with the same `__dict__`). Tensors are
//! plain-pickled (`_rebuild_tensor_v2` over `torch.storage._load_from_bytes`, see
//! [`crate::torch_file`]).
//!
//! What comes out is data: the class name, the constructor arguments as pickled values, the
//! plain attributes, and the module's `state_dict()` (parameters and persistent buffers under
//! dotted names). Deciding what a class means is the caller's business, by name only.

use std::path::Path;

use crate::error::MetricsError;
use crate::pickle::{self, Value};
use crate::torch_file::{inline_tensor, read_weights_file, StateDict};

/// One pickled `torch.nn.Module`.
#[derive(Debug)]
pub struct PickledModule {
    /// Python class name (`Generator`); for persistent classes the module is a hash of the
    /// source, so only the name is kept.
    pub class: String,
    /// The source text of a persistent class (never executed; kept to tell code bases apart).
    pub source: Option<String>,
    /// `_init_args` of a persistent class (empty otherwise).
    pub init_args: Vec<Value>,
    /// `_init_kwargs` of a persistent class (empty otherwise), in pickled order.
    pub init_kwargs: Vec<(String, Value)>,
    /// Plain attributes of the module's `__dict__` (not torch's bookkeeping, not tensors).
    pub attrs: Vec<(String, Value)>,
    /// What `state_dict()` returns: parameters and persistent buffers, dotted, on the CPU.
    pub state: StateDict,
}

impl PickledModule {
    pub fn kwarg(&self, name: &str) -> Option<&Value> {
        self.init_kwargs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
    pub fn attr(&self, name: &str) -> Option<&Value> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// A top-level entry of a network pickle.
#[derive(Debug)]
pub enum PickleEntry {
    Module(Box<PickledModule>),
    /// Anything else (`training_set_kwargs`, `None`), as pickled.
    Value(Value),
}

/// Reads a network pickle: a top-level dict of modules and values, in pickled order. Any other
/// top level (a bare module, a call of some function) is refused by name.
pub fn read_network_pickle(path: &Path) -> Result<Vec<(String, PickleEntry)>, MetricsError> {
    let data = read_weights_file(path, "network pickles")?;
    let mut pos = 0;
    let top = pickle::load(&data, &mut pos).map_err(|e| MetricsError::format(path, e))?;
    // The tree holds its own copy of every payload: the file's bytes can go before the tensors
    // are built.
    drop(data);
    network_entries(top).map_err(|e| MetricsError::format(path, e))
}

fn network_entries(top: Value) -> Result<Vec<(String, PickleEntry)>, String> {
    let Value::Dict(items) = top else {
        return Err(format!(
            "not a network pickle: the top level is {}, not a dict of networks",
            describe(&top)
        ));
    };
    let mut out = Vec::new();
    for (k, v) in items {
        let Value::Str(name) = k else {
            return Err(format!("not a network pickle: a key is {}", describe(&k)));
        };
        let entry = match module(&v, 0).map_err(|e| format!("{name}: {e}"))? {
            Some(m) => PickleEntry::Module(Box::new(m)),
            None => PickleEntry::Value(v),
        };
        out.push((name, entry));
    }
    Ok(out)
}

/// What a value is, in a few words, for messages (a call names its callable).
pub fn describe(v: &Value) -> String {
    match v {
        Value::Object { callable, .. } => match &**callable {
            Value::Global(m, n) => format!("a call of {m}.{n}"),
            _ => "an object".into(),
        },
        Value::Global(m, n) => format!("the name {m}.{n}"),
        Value::Dict(_) => "a dict".into(),
        Value::List(_) => "a list".into(),
        Value::Tuple(_) => "a tuple".into(),
        Value::Str(_) => "a string".into(),
        Value::Bytes(_) => "bytes".into(),
        Value::None => "None".into(),
        _ => "a scalar".into(),
    }
}

fn dict_get<'a>(d: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    d.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// What identifies a pickled module: its class, a persistent class's source, its `__dict__`.
struct ModuleParts<'a> {
    class: String,
    source: Option<String>,
    dict: &'a [(Value, Value)],
}

/// The parts of a pickled module, if `v` is one.
fn module_parts(v: &Value) -> Option<ModuleParts<'_>> {
    let Value::Object {
        callable,
        args,
        state,
    } = v
    else {
        return None;
    };
    let Value::Global(m, n) = &**callable else {
        return None;
    };
    if m == "torch_utils.persistence" && n == "_reconstruct_persistent_obj" {
        let Some([Value::Dict(meta)]) = args.as_seq() else {
            return None;
        };
        if dict_get(meta, "type").and_then(Value::as_str) != Some("class") {
            return None;
        }
        let class = dict_get(meta, "class_name")?.as_str()?.to_string();
        let source = dict_get(meta, "module_src")
            .and_then(Value::as_str)
            .map(str::to_string);
        let Some(Value::Dict(st)) = dict_get(meta, "state") else {
            return None;
        };
        return Some(ModuleParts {
            class,
            source,
            dict: st,
        });
    }
    // `copyreg._reconstructor(cls, object, None)` (protocol < 2) or `NEWOBJ cls()`.
    let class = if m == "copyreg" && n == "_reconstructor" {
        match args.as_seq() {
            Some([Value::Global(_, c), ..]) => c.clone(),
            _ => return None,
        }
    } else {
        n.clone()
    };
    match state.as_deref() {
        Some(Value::Dict(st)) if dict_get(st, "_parameters").is_some() => Some(ModuleParts {
            class,
            source: None,
            dict: st,
        }),
        _ => None,
    }
}

fn module(v: &Value, depth: usize) -> Result<Option<PickledModule>, String> {
    let Some(ModuleParts {
        class,
        source,
        dict: st,
    }) = module_parts(v)
    else {
        return Ok(None);
    };
    let mut m = PickledModule {
        class,
        source,
        init_args: Vec::new(),
        init_kwargs: Vec::new(),
        attrs: Vec::new(),
        state: StateDict::new(),
    };
    for (k, v) in st {
        let Some(k) = k.as_str() else { continue };
        match k {
            "_init_args" => m.init_args = v.as_seq().map(<[Value]>::to_vec).unwrap_or_default(),
            "_init_kwargs" => {
                if let Value::Dict(kw) = v {
                    m.init_kwargs = kw
                        .iter()
                        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.clone())))
                        .collect();
                }
            }
            _ if k.starts_with('_') || k == "training" => {}
            _ => {
                if inline_tensor(v)?.is_none() && module_parts(v).is_none() {
                    m.attrs.push((k.to_string(), v.clone()));
                }
            }
        }
    }
    state_dict(st, "", depth, &mut m.state)?;
    Ok(Some(m))
}

/// Deepest module nesting accepted (stylegan2-ada's networks nest about five deep).
const MAX_NESTING: usize = 64;

fn state_dict(
    st: &[(Value, Value)],
    prefix: &str,
    depth: usize,
    out: &mut StateDict,
) -> Result<(), String> {
    if depth > MAX_NESTING {
        return Err(format!("modules nest deeper than {MAX_NESTING} levels"));
    }
    let non_persistent: Vec<&str> = match dict_get(st, "_non_persistent_buffers_set") {
        Some(Value::List(v)) => v.iter().filter_map(Value::as_str).collect(),
        Some(Value::Object { args, .. }) => args
            .as_seq()
            .and_then(|a| a.first())
            .and_then(Value::as_seq)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    for (group, skip) in [("_parameters", &[][..]), ("_buffers", &non_persistent[..])] {
        let Some(Value::Dict(items)) = dict_get(st, group) else {
            continue;
        };
        for (k, v) in items {
            let Some(name) = k.as_str() else { continue };
            if skip.contains(&name) || *v == Value::None {
                continue;
            }
            let full = format!("{prefix}{name}");
            let t = inline_tensor(v)
                .map_err(|e| format!("{full}: {e}"))?
                .ok_or_else(|| format!("{full}: not a tensor but {}", describe(v)))?;
            out.insert(full, t);
        }
    }
    if let Some(Value::Dict(children)) = dict_get(st, "_modules") {
        for (k, v) in children {
            let Some(name) = k.as_str() else { continue };
            if *v == Value::None {
                continue;
            }
            let child = module_parts(v)
                .ok_or_else(|| format!("{prefix}{name}: not a module but {}", describe(v)))?;
            state_dict(child.dict, &format!("{prefix}{name}."), depth + 1, out)?;
        }
    }
    Ok(())
}
