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
//! it), [`r3gan`], [`biggan`] (BigGAN-PyTorch and FQ-BigGAN), [`ugatit`] (UGATIT-pytorch).

pub mod biggan;
pub mod r3gan;
pub mod stylegan2;
pub mod ugatit;

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::models::{DataShape, ModelConfig};
use crate::rundir::checkpoint;
use crate::util::TaskConfig;
use gantry_metrics::module_pickle::{self, PickleEntry, PickledModule};
use gantry_metrics::pickle::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
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
            .ok_or_else(|| {
                Error::config(
                    "--checkpoint",
                    format!("{} holds no generator", self.origin),
                )
            })
    }
}

/// Whether `path` names foreign weights rather than a gantry run or checkpoint directory: a
/// file, or a folder of BigGAN-PyTorch weights (`G.pth`, `G_ema.pth`, `D.pth`).
pub fn is_foreign(path: &Path) -> bool {
    path.is_file()
        || (path.is_dir()
            && !path.join("meta.json").exists()
            && BIGGAN_FILES.iter().any(|(f, _)| path.join(f).is_file()))
}

/// BigGAN-PyTorch's weight files and the stores they fill.
const BIGGAN_FILES: [(&str, &str); 3] = [("G.pth", "g"), ("G_ema.pth", "g_ema"), ("D.pth", "d")];

/// Reads foreign weights (the format is sniffed from the content): a stylegan2-ada-pytorch,
/// AdaptiveMix or R3GAN network pickle, BigGAN-PyTorch weights (a `G.pth`-style file or the
/// folder holding them). A U-GAT-IT checkpoint is a translation model: see [`translation`].
pub fn import(path: &Path) -> Result<Imported> {
    if path.is_dir() {
        let mut files = Vec::new();
        for (f, store) in BIGGAN_FILES {
            let file = path.join(f);
            if file.is_file() {
                let sd = state_dict(&file)?;
                if !biggan::recognises(&sd) {
                    return Err(Error::input(&file, "is not a BigGAN-PyTorch state dict"));
                }
                files.push((store.to_string(), sd, file));
            }
        }
        return biggan::import(&files);
    }
    let head = read_head(path)?;
    if is_network_pickle(&head) {
        let entries =
            module_pickle::read_network_pickle(path).map_err(|e| reading_error(path, e))?;
        return from_network_pickle(path, entries);
    }
    if gantry_metrics::torch_file::detect_format(&head).is_some() {
        let sd = state_dict(path)?;
        if biggan::recognises(&sd) {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            let store = if name.contains("ema") { "g_ema" } else { "g" };
            return biggan::import(&[(store.to_string(), sd, path.to_path_buf())]);
        }
        if ugatit::recognises(&sd) {
            return Err(Error::input(
                path,
                "is a U-GAT-IT translation model (gantry translate --checkpoint takes it)",
            ));
        }
        let mut keys: Vec<&str> = sd.keys().map(String::as_str).take(4).collect();
        keys.sort();
        return Err(Error::input(
            path,
            format!(
                "is a state dict gantry does not recognise (keys {}, ...); it reads BigGAN-PyTorch \
                 and UGATIT-pytorch state dicts and stylegan2-ada-pytorch / R3GAN network pickles",
                keys.join(", ")
            ),
        ));
    }
    Err(Error::input(
        path,
        "is neither a network pickle nor a torch.save / safetensors file",
    ))
}

/// The generators of a translation model for `gantry translate`: a gantry run's, or those of a
/// UGATIT-pytorch checkpoint at `resolution` (default: the size a full model's FC layer fixes,
/// else UGATIT-pytorch's 256). Returns notes for the user.
pub fn translation(
    path: &Path,
    device: Option<tch::Device>,
    resolution: Option<i64>,
) -> Result<(crate::translate::train::Generators, Vec<String>)> {
    if !is_foreign(path) {
        if resolution.is_some() {
            return Err(Error::config(
                "--size",
                "a gantry run translates at its own resolution",
            ));
        }
        return Ok((
            crate::translate::train::Generators::of_run(path, device)?,
            Vec::new(),
        ));
    }
    let head = read_head(path)?;
    if is_network_pickle(&head) {
        return Err(Error::input(
            path,
            "is a network pickle (a GAN), not a UGATIT-pytorch checkpoint (gantry sample takes it)",
        ));
    }
    let sd = state_dict(path)?;
    if !ugatit::recognises(&sd) {
        return Err(Error::input(
            path,
            "is not a UGATIT-pytorch checkpoint (no genA2B) nor a gantry translation run",
        ));
    }
    ugatit::generators(&sd, path, device.unwrap_or(tch::Device::Cpu), resolution)
}

/// A torch.save or safetensors file's tensors (nested dicts flattened with dots).
fn state_dict(path: &Path) -> Result<Tensors> {
    let sd =
        gantry_metrics::torch_file::load_state_dict(path).map_err(|e| reading_error(path, e))?;
    Ok(sd.into_iter().collect())
}

/// A reader's error as bad input (exit code 2), the path named once.
fn reading_error(path: &Path, e: gantry_metrics::MetricsError) -> Error {
    let msg = e.to_string();
    let msg = msg.trim_start_matches(&format!("{}: ", path.display()));
    Error::input(path, msg)
}

/// Whether a file starting with `head` is a plain pickle (a network snapshot) rather than a
/// legacy `torch.save` file, which starts with a pickled long (its magic number), not a dict.
fn is_network_pickle(head: &[u8]) -> bool {
    head.first() == Some(&0x80) && !head.starts_with(&[0x80, 0x02, 0x8a])
}

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
    if r3gan::recognises(g) {
        return r3gan::import(path, get("G"), get("G_ema"), get("D"));
    }
    Err(Error::input(
        path,
        format!(
            "its generator is a {} with arguments ({}), which gantry cannot import \
             (it reads stylegan2-ada-pytorch's and R3GAN's training.networks.Generator)",
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
                Error::config(
                    format!("{}.{key}", self.what),
                    "missing (no default to assume)",
                )
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

    /// An argument gantry supports only at one value (`architecture = 'skip'`).
    pub fn require(&mut self, key: &str, supported: &Value, why: &str) -> Result<()> {
        match self.take(key) {
            None => Ok(()),
            Some(v) if v == supported => Ok(()),
            Some(v) => Err(Error::config(
                format!("{}.{key}", self.what),
                format!(
                    "is {}; gantry supports only {} ({why})",
                    show(v),
                    show(supported)
                ),
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

/// The shape of tensor `t` (named `key`), which must exist with `rank` positive dimensions (shapes read off
/// a foreign file decide what gets built, so a hostile one must not reach an indexing panic or
/// a zero division).
pub(crate) fn dims(t: Option<&Tensor>, key: &str, rank: usize, file: &Path) -> Result<Vec<i64>> {
    let t = t.ok_or_else(|| Error::input(file, format!("has no {key}")))?;
    let size = t.size();
    if size.len() != rank || size.iter().any(|&d| d <= 0) {
        return Err(Error::input(
            file,
            format!("{key} is {size:?}, expected {rank} positive dimensions"),
        ));
    }
    Ok(size)
}

/// [`dims`] of `key` in a state dict.
pub(crate) fn dims_in(sd: &Tensors, key: &str, rank: usize, file: &Path) -> Result<Vec<i64>> {
    dims(sd.get(key), key, rank, file)
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

/// How `gantry export` names the tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// The reference implementation's names, layouts and constructor arguments.
    Reference,
    /// gantry's own names, with the settings `python/gantry_torch` builds the networks from.
    Gantry,
}

impl ExportFormat {
    pub const NAMES: &'static [&'static str] = &["reference", "gantry"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reference" => Some(ExportFormat::Reference),
            "gantry" => Some(ExportFormat::Gantry),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// A run directory (latest checkpoint) or a checkpoint directory.
    pub checkpoint: PathBuf,
    /// The directory the files go to (created).
    pub out: PathBuf,
    pub format: ExportFormat,
    /// Overwrite files of an earlier export in `out`.
    pub force: bool,
}

/// One network as the reference code holds it.
pub struct ExportedNet {
    /// File stem (`G`, `G_ema`, `D`, `genA2B`).
    pub name: String,
    pub tensors: Vec<(String, Tensor)>,
}

/// What an architecture's export gives: its networks and `kwargs.json`.
pub struct Export {
    pub nets: Vec<ExportedNet>,
    pub kwargs: serde_json::Value,
}

/// What `gantry export` wrote.
#[derive(Debug)]
pub struct ExportReport {
    pub files: Vec<PathBuf>,
    /// What the files load into, for the user (`stylegan2-ada-pytorch training.networks`).
    pub target: String,
}

/// `gantry export`: a run's networks as safetensors files plus `kwargs.json`, so that the
/// reference code (or `python/gantry_torch`) builds and loads them without gantry.
pub fn export(opts: &ExportOptions) -> Result<ExportReport> {
    let ckpt = checkpoint::resolve(&opts.checkpoint)?;
    let meta = checkpoint::read_meta(&ckpt)?;
    let read = |store: &str| -> Result<Option<Tensors>> {
        if ckpt.join(format!("{store}.safetensors")).exists() {
            checkpoint::read_store(&ckpt, store).map(Some)
        } else {
            Ok(None)
        }
    };
    let export = if meta.arch.starts_with("classify/") {
        return Err(Error::checkpoint(
            &ckpt,
            "is a classifier run; gantry export takes GAN and translation runs",
        ));
    } else if meta.arch.starts_with("translate/") {
        let cfg = crate::translate::TranslateConfig::from_toml(
            &meta.config,
            &ckpt.display().to_string(),
        )?;
        let g = read("g")?.ok_or_else(|| Error::checkpoint(&ckpt, "has no g.safetensors"))?;
        let d = read("d")?;
        ugatit::export(&cfg, &g, d.as_ref(), opts.format)?
    } else {
        let cfg = RunConfig::from_value_str(&meta.config, &ckpt)?;
        let dataset = gantry_data::open(&cfg.data)?;
        let shape = crate::train::data_shape(dataset.as_ref());
        let mut stores = Vec::new();
        for name in ["g", "g_ema", "d"] {
            // Without an EMA the checkpoint's g_ema is never trained (sampling uses g).
            if name == "g_ema" && !cfg.train.ema.enabled {
                continue;
            }
            if let Some(t) = read(name)? {
                stores.push((name, t));
            }
        }
        match opts.format {
            ExportFormat::Gantry => gantry_format(&cfg.model, &shape, &stores),
            ExportFormat::Reference => reference_export(&cfg.model, &shape, &stores)?,
        }
    };
    write_export(&export, &opts.out, opts.force)
}

/// A GAN's stores (`g`, `g_ema`, `d`, gantry names) under its reference implementation's names.
pub fn reference_export(
    model: &ModelConfig,
    shape: &DataShape,
    stores: &[(&str, Tensors)],
) -> Result<Export> {
    match model {
        ModelConfig::StyleGan2(c) => stylegan2::export(c, shape, stores),
        ModelConfig::BigGan(c) => biggan::export(c, shape, stores),
        ModelConfig::R3gan(c) => r3gan::export(c, shape, stores),
        other => Err(Error::config(
            "--format",
            format!(
                "{} has no official PyTorch implementation to name its weights after; \
                 use --format gantry (python/gantry_torch builds it)",
                other.arch_name()
            ),
        )),
    }
}

/// gantry's names, and the settings `python/gantry_torch` needs.
fn gantry_format(model: &ModelConfig, shape: &DataShape, stores: &[(&str, Tensors)]) -> Export {
    let nets = stores
        .iter()
        .map(|(name, t)| {
            let mut tensors: Vec<(String, Tensor)> = t
                .iter()
                .map(|(k, v)| (k.clone(), v.shallow_clone()))
                .collect();
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            ExportedNet {
                name: match *name {
                    "g" => "G",
                    "g_ema" => "G_ema",
                    _ => "D",
                }
                .into(),
                tensors,
            }
        })
        .collect();
    Export {
        nets,
        kwargs: serde_json::json!({
            "format": "gantry",
            "model": model,
            "img_channels": shape.channels,
            "img_resolution": shape.resolution,
            "num_classes": shape.num_classes.filter(|_| model.arch().conditional()),
        }),
    }
}

fn write_export(export: &Export, out: &Path, force: bool) -> Result<ExportReport> {
    let mut files: Vec<PathBuf> = export
        .nets
        .iter()
        .map(|n| out.join(format!("{}.safetensors", n.name)))
        .collect();
    files.push(out.join("kwargs.json"));
    if !force {
        if let Some(f) = files.iter().find(|f| f.exists()) {
            return Err(Error::input(
                f,
                "already exists; pass --force to overwrite it",
            ));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for (net, file) in export.nets.iter().zip(&files) {
        let cpu: Vec<(String, Tensor)> = net
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.to_device(tch::Device::Cpu).contiguous()))
            .collect();
        let tmp = file.with_extension("safetensors.tmp");
        Tensor::write_safetensors(&cpu, &tmp).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, file).map_err(|e| Error::io(file, e))?;
    }
    let json = files.last().expect("kwargs.json is listed");
    let text = serde_json::to_string_pretty(&export.kwargs).map_err(|e| Error::io(json, e))?;
    std::fs::write(json, text + "\n").map_err(|e| Error::io(json, e))?;
    let target = match export.kwargs["format"].as_str() {
        Some("gantry") | None => "python/gantry_torch".to_string(),
        Some(code) => code.to_string(),
    };
    Ok(ExportReport { files, target })
}
