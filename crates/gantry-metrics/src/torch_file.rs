//! Reads a state dict (name -> tensor) from the three formats weights come in:
//!
//! - **legacy torch.save** (pre-1.6, `_use_new_zipfile_serialization=False`; the format of
//!   `pt_inception-2015-12-05-6726825d.pth`): pickles for the magic number, protocol version and
//!   system info, then the state dict whose tensors reference storages by persistent id, then
//!   the sorted storage-key list; after that each storage as an int64 element count followed by
//!   its little-endian data, in key-list order;
//! - **zip torch.save** (the default since PyTorch 1.6): `<prefix>/data.pkl` plus one raw entry
//!   `<prefix>/data/<key>` per storage;
//! - **safetensors**.
//!
//! The format is sniffed from the content, not the extension. Nested dicts are flattened with
//! dots (`{"model": {"fc.weight": ..}}` -> `model.fc.weight`); non-tensor entries are skipped.
//! Every offset, length and stride is checked against the data before a tensor is built, so a
//! truncated or corrupt file is an error, never a panic or an out-of-bounds read.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::error::MetricsError;
use crate::pickle::{self, Value};

/// Environment variable naming the FID Inception weights file.
pub const WEIGHTS_ENV: &str = "GANTRY_FID_WEIGHTS";

/// Tensors by name, on the CPU, in key order.
pub type StateDict = BTreeMap<String, Tensor>;

/// The on-disk formats [`load_state_dict`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchFileFormat {
    Legacy,
    Zip,
    Safetensors,
}

/// `$GANTRY_FID_WEIGHTS` if set and non-empty. gantry never downloads weights, so this (or an
/// explicit path) is the only way to find them.
pub fn default_weights_path() -> Option<PathBuf> {
    non_empty(std::env::var_os(WEIGHTS_ENV))
}

fn non_empty(v: Option<std::ffi::OsString>) -> Option<PathBuf> {
    v.filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The weights to use: `explicit` (a flag), else `$GANTRY_FID_WEIGHTS`, else an error that
/// names the expected file.
pub fn weights_path(explicit: Option<&Path>) -> Result<PathBuf, MetricsError> {
    choose_weights(explicit, std::env::var_os(WEIGHTS_ENV))
}

fn choose_weights(
    explicit: Option<&Path>,
    env: Option<std::ffi::OsString>,
) -> Result<PathBuf, MetricsError> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| non_empty(env))
        .ok_or(MetricsError::NoWeights)
}

/// Sniffs the format from the first bytes.
pub fn detect_format(head: &[u8]) -> Option<TorchFileFormat> {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Some(TorchFileFormat::Zip);
    }
    if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        return Some(TorchFileFormat::Legacy);
    }
    if head.len() >= 9 && head[8] == b'{' {
        return Some(TorchFileFormat::Safetensors);
    }
    None
}

/// Loads every tensor of a torch.save (legacy or zip) or safetensors file onto the CPU.
pub fn load_state_dict(path: &Path) -> Result<StateDict, MetricsError> {
    let data = read_weights_file(path, "weights files")?;
    parse_state_dict(path, &data)
}

/// A weights file's bytes, refusing files above 4 GB (`what` names the kind in the message):
/// no network gantry loads needs more, and the readers hold the whole file.
pub(crate) fn read_weights_file(path: &Path, what: &str) -> Result<Vec<u8>, MetricsError> {
    const MAX_FILE: u64 = 4 << 30;
    let len = std::fs::metadata(path)
        .map_err(|e| MetricsError::io(path, e))?
        .len();
    if len > MAX_FILE {
        return Err(MetricsError::format(
            path,
            format!("is {len} bytes; {what} above {MAX_FILE} bytes are refused"),
        ));
    }
    std::fs::read(path).map_err(|e| MetricsError::io(path, e))
}

/// [`load_state_dict`] on bytes already read; `path` only names the file in errors.
pub fn parse_state_dict(path: &Path, data: &[u8]) -> Result<StateDict, MetricsError> {
    match detect_format(data) {
        Some(TorchFileFormat::Legacy) => load_legacy(path, data),
        Some(TorchFileFormat::Zip) => load_zip(path, data),
        Some(TorchFileFormat::Safetensors) => load_safetensors(path, data),
        None => Err(MetricsError::format(
            path,
            format!(
                "not a torch.save or safetensors file ({} bytes, starts with {:02x?})",
                data.len(),
                &data[..data.len().min(8)]
            ),
        )),
    }
}

/// A storage as referenced from the pickle.
#[derive(Debug, Clone)]
struct StorageRef {
    key: String,
    kind: Kind,
    numel: usize,
    /// Legacy view of another storage: (view key, element offset, element count).
    view: Option<(String, usize, usize)>,
}

/// A tensor as described by `_rebuild_tensor_v2`, before its storage is read.
#[derive(Debug)]
struct TensorRef {
    storage: StorageRef,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

fn storage_kind(module: &str, name: &str) -> Option<Kind> {
    if module != "torch" {
        return None;
    }
    Some(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

fn to_usize(v: &Value, what: &str) -> Result<usize, String> {
    v.as_int()
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| format!("{what} is not a non-negative integer: {v:?}"))
}

/// `('storage', torch.FloatStorage, key, location, numel[, view_metadata])`.
fn storage_ref(pid: &Value) -> Result<StorageRef, String> {
    let t = pid
        .as_seq()
        .ok_or_else(|| format!("persistent id is not a tuple: {pid:?}"))?;
    if t.len() < 5 || t[0].as_str() != Some("storage") {
        return Err(format!("unsupported persistent id {pid:?}"));
    }
    let kind = match &t[1] {
        Value::Global(m, n) => {
            storage_kind(m, n).ok_or_else(|| format!("unsupported storage type {m}.{n}"))?
        }
        other => return Err(format!("storage type is not a class: {other:?}")),
    };
    let key = match &t[2] {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => return Err(format!("storage key is not a string: {other:?}")),
    };
    let numel = to_usize(&t[4], "storage size")?;
    let view = match t.get(5) {
        None | Some(Value::None) => None,
        Some(Value::Tuple(v)) if v.len() == 3 => {
            let vk = match &v[0] {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                other => return Err(format!("view key is not a string: {other:?}")),
            };
            Some((
                vk,
                to_usize(&v[1], "view offset")?,
                to_usize(&v[2], "view size")?,
            ))
        }
        Some(other) => return Err(format!("unsupported storage view {other:?}")),
    };
    Ok(StorageRef {
        key,
        kind,
        numel,
        view,
    })
}

fn int_list(v: &Value, what: &str) -> Result<Vec<i64>, String> {
    v.as_seq()
        .ok_or_else(|| format!("{what} is not a tuple"))?
        .iter()
        .map(|x| x.as_int().ok_or_else(|| format!("{what} holds {x:?}")))
        .collect()
}

/// Recognises the reconstructors torch pickles tensors with.
fn tensor_ref(v: &Value) -> Result<Option<TensorRef>, String> {
    let Value::Object { callable, args, .. } = v else {
        return Ok(None);
    };
    let Value::Global(m, n) = &**callable else {
        return Ok(None);
    };
    let args = args.as_seq().unwrap_or(&[]);
    match (m.as_str(), n.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            if args.len() < 4 {
                return Err(format!("{n} with {} arguments", args.len()));
            }
            let storage = match &args[0] {
                Value::Persistent(pid) => storage_ref(pid)?,
                other => return Err(format!("tensor storage is not a persistent id: {other:?}")),
            };
            let offset = args[1]
                .as_int()
                .ok_or("tensor storage offset is not an integer")?;
            let size = int_list(&args[2], "tensor size")?;
            let stride = int_list(&args[3], "tensor stride")?;
            Ok(Some(TensorRef {
                storage,
                offset,
                size,
                stride,
            }))
        }
        // nn.Parameter: (tensor, requires_grad, hooks).
        ("torch._utils", "_rebuild_parameter")
        | ("torch._utils", "_rebuild_parameter_with_state") => match args.first() {
            Some(inner) => tensor_ref(inner),
            None => Err("_rebuild_parameter without arguments".into()),
        },
        _ => Ok(None),
    }
}

/// Walks the unpickled object, collecting tensors under dotted names.
fn collect(v: &Value, prefix: &str, out: &mut Vec<(String, TensorRef)>) -> Result<(), String> {
    if let Some(t) = tensor_ref(v)? {
        out.push((prefix.to_string(), t));
        return Ok(());
    }
    if let Value::Dict(items) = v {
        for (k, val) in items {
            let k = match k {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                _ => continue,
            };
            let name = if prefix.is_empty() {
                k
            } else {
                format!("{prefix}.{k}")
            };
            collect(val, &name, out)?;
        }
    }
    Ok(())
}

/// Every storage referenced anywhere in the object (tensor or not), with its element type.
fn storage_kinds(v: &Value, out: &mut HashMap<String, Kind>) {
    match v {
        Value::Persistent(pid) => {
            if let Ok(s) = storage_ref(pid) {
                out.insert(s.key, s.kind);
            }
        }
        Value::List(items) | Value::Tuple(items) => {
            items.iter().for_each(|x| storage_kinds(x, out));
        }
        Value::Dict(items) => items.iter().for_each(|(k, x)| {
            storage_kinds(k, out);
            storage_kinds(x, out);
        }),
        Value::Object {
            callable,
            args,
            state,
        } => {
            storage_kinds(callable, out);
            storage_kinds(args, out);
            if let Some(s) = state {
                storage_kinds(s, out);
            }
        }
        _ => {}
    }
}

/// Builds a tensor from raw little-endian bytes after checking the length.
pub(crate) fn tensor_from_bytes(bytes: &[u8], shape: &[i64], kind: Kind) -> Result<Tensor, String> {
    let numel = shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    });
    let need = numel.and_then(|n| n.checked_mul(kind.elt_size_in_bytes()));
    match need {
        Some(n) if n == bytes.len() => {
            Tensor::f_from_data_size(bytes, shape, kind).map_err(|e| e.to_string())
        }
        Some(n) => Err(format!(
            "shape {shape:?} of {kind:?} needs {n} bytes, found {}",
            bytes.len()
        )),
        None => Err(format!("invalid shape {shape:?}")),
    }
}

/// Views a storage (flat 1-D tensor) through offset/size/stride, checking bounds first.
fn rebuild(storage: &Tensor, numel: usize, t: &TensorRef) -> Result<Tensor, String> {
    if t.size.len() != t.stride.len() {
        return Err(format!(
            "size {:?} and stride {:?} differ in rank",
            t.size, t.stride
        ));
    }
    if t.offset < 0 || t.size.iter().any(|&s| s < 0) || t.stride.iter().any(|&s| s < 0) {
        return Err(format!(
            "negative offset, size or stride ({}, {:?}, {:?})",
            t.offset, t.size, t.stride
        ));
    }
    if t.size.contains(&0) {
        return Tensor::f_zeros(&t.size, (storage.kind(), tch::Device::Cpu))
            .map_err(|e| e.to_string());
    }
    let last = t
        .size
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |acc, (&s, &st)| {
            (s - 1).checked_mul(st).and_then(|x| acc.checked_add(x))
        });
    match last {
        Some(l) if (l as u64) < numel as u64 => storage
            .f_as_strided(&t.size, &t.stride, t.offset)
            .and_then(|x| x.f_contiguous())
            .map_err(|e| e.to_string()),
        _ => Err(format!(
            "tensor (offset {}, size {:?}, stride {:?}) reaches past its storage of {numel} elements",
            t.offset, t.size, t.stride
        )),
    }
}

/// Resolves tensor references given a function that yields (flat storage, numel) by key.
fn materialise(
    path: &Path,
    refs: Vec<(String, TensorRef)>,
    storages: &HashMap<String, (Tensor, usize)>,
) -> Result<StateDict, MetricsError> {
    let mut out = StateDict::new();
    for (name, t) in refs {
        let (flat, numel) = storages.get(&t.storage.key).ok_or_else(|| {
            MetricsError::format(
                path,
                format!("{name}: storage {} has no data", t.storage.key),
            )
        })?;
        let (flat, numel) = match &t.storage.view {
            None => (flat.shallow_clone(), *numel),
            Some((_, off, len)) => {
                if off.checked_add(*len).is_none_or(|e| e > *numel) {
                    return Err(MetricsError::format(
                        path,
                        format!("{name}: storage view [{off}, +{len}) is outside {numel} elements"),
                    ));
                }
                let v = flat
                    .f_narrow(0, *off as i64, *len as i64)
                    .map_err(|e| MetricsError::format(path, format!("{name}: {e}")))?;
                (v, *len)
            }
        };
        let tensor = rebuild(&flat, numel, &t)
            .map_err(|e| MetricsError::format(path, format!("{name}: {e}")))?;
        out.insert(name, tensor);
    }
    Ok(out)
}

const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

fn load_legacy(path: &Path, data: &[u8]) -> Result<StateDict, MetricsError> {
    let err = |reason: String| MetricsError::format(path, reason);
    let (obj, storages) = read_legacy(data).map_err(&err)?;
    let mut refs = Vec::new();
    collect(&obj, "", &mut refs).map_err(&err)?;
    materialise(path, refs, &storages)
}

/// Flat storages of a legacy file by key.
type Storages = HashMap<String, (Tensor, usize)>;

/// The pickled object of a legacy torch.save file and its storages, checked to the last byte.
fn read_legacy(data: &[u8]) -> Result<(Value, Storages), String> {
    let mut pos = 0usize;
    let magic = pickle::load(data, &mut pos)?;
    if magic != Value::BigInt(LEGACY_MAGIC.to_vec()) {
        return Err("not a torch.save file (legacy magic number missing)".into());
    }
    let version = pickle::load(data, &mut pos)?;
    if version.as_int() != Some(1001) {
        return Err(format!(
            "unsupported legacy torch.save protocol {version:?}"
        ));
    }
    let sys_info = pickle::load(data, &mut pos)?;
    if let Value::Dict(items) = &sys_info {
        let little = items
            .iter()
            .find(|(k, _)| k.as_str() == Some("little_endian"));
        if let Some((_, Value::Bool(false))) = little {
            return Err("big-endian torch.save files are not supported".into());
        }
    }
    let obj = pickle::load(data, &mut pos)?;
    let keys = pickle::load(data, &mut pos)?;
    let keys: Vec<String> = keys
        .as_seq()
        .ok_or("storage key list is not a list")?
        .iter()
        .map(|k| match k {
            Value::Str(s) => Ok(s.clone()),
            Value::Int(i) => Ok(i.to_string()),
            other => Err(format!("storage key {other:?} is not a string")),
        })
        .collect::<Result<_, _>>()?;

    // Storage kinds come from the pickled references; the raw section only has sizes.
    let mut kinds: HashMap<String, Kind> = HashMap::new();
    storage_kinds(&obj, &mut kinds);
    let mut storages = HashMap::new();
    for key in &keys {
        let at = pos;
        let count = data
            .get(pos..pos + 8)
            .ok_or_else(|| {
                format!(
                    "truncated: storage {key} header at byte {at} is past the end ({} bytes)",
                    data.len()
                )
            })?
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| "storage header".to_string())?;
        pos += 8;
        // A storage nobody references has an unknown element size: it cannot be skipped.
        let kind = *kinds
            .get(key.as_str())
            .ok_or_else(|| format!("storage {key} is listed but never referenced"))?;
        let bytes = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(kind.elt_size_in_bytes()))
            .filter(|&b| b <= data.len() - pos)
            .ok_or_else(|| {
                format!(
                    "truncated: storage {key} needs {count} elements of {kind:?} at byte {pos}, \
                     file has {} bytes",
                    data.len()
                )
            })?;
        let flat = tensor_from_bytes(&data[pos..pos + bytes], &[count as i64], kind)
            .map_err(|e| format!("storage {key}: {e}"))?;
        pos += bytes;
        storages.insert(key.clone(), (flat, count as usize));
    }
    if pos != data.len() {
        return Err(format!(
            "{} trailing bytes after the last storage",
            data.len() - pos
        ));
    }
    Ok((obj, storages))
}

/// A tensor pickled by plain `pickle` rather than `torch.save` (the tensors of a network pickle):
/// `_rebuild_tensor_v2(storage, offset, size, stride, ..)`, optionally inside
/// `_rebuild_parameter`, whose storage is `torch.storage._load_from_bytes(b)` with `b` a legacy
/// torch.save of that one storage. `Ok(None)` when `v` is not a tensor.
pub(crate) fn inline_tensor(v: &Value) -> Result<Option<Tensor>, String> {
    let Value::Object { callable, args, .. } = v else {
        return Ok(None);
    };
    let Value::Global(m, n) = &**callable else {
        return Ok(None);
    };
    let args = args.as_seq().unwrap_or(&[]);
    match (m.as_str(), n.as_str()) {
        ("torch._utils", "_rebuild_parameter")
        | ("torch._utils", "_rebuild_parameter_with_state") => match args.first() {
            Some(inner) => inline_tensor(inner),
            None => Err("_rebuild_parameter without arguments".into()),
        },
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            if args.len() < 4 {
                return Err(format!("{n} with {} arguments", args.len()));
            }
            let bytes = match &args[0] {
                Value::Object { callable, args, .. }
                    if **callable
                        == Value::Global("torch.storage".into(), "_load_from_bytes".into()) =>
                {
                    match args.as_seq() {
                        Some([Value::Bytes(b)]) => b,
                        _ => return Err("_load_from_bytes without a byte string".into()),
                    }
                }
                other => {
                    return Err(format!(
                        "tensor storage is not torch.storage._load_from_bytes: {}",
                        short(other)
                    ))
                }
            };
            let (obj, storages) = read_legacy(bytes).map_err(|e| format!("tensor storage: {e}"))?;
            let Value::Persistent(pid) = &obj else {
                return Err("tensor storage does not hold a storage".into());
            };
            let storage = storage_ref(pid)?;
            let (flat, numel) = storages
                .get(&storage.key)
                .ok_or("tensor storage has no data")?;
            let t = TensorRef {
                storage: storage.clone(),
                offset: args[1]
                    .as_int()
                    .ok_or("tensor storage offset is not an integer")?,
                size: int_list(&args[2], "tensor size")?,
                stride: int_list(&args[3], "tensor stride")?,
            };
            rebuild(flat, *numel, &t).map(Some)
        }
        _ => Ok(None),
    }
}

/// The start of a value's debug form, for messages.
fn short(v: &Value) -> String {
    let s = format!("{v:?}");
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

fn load_zip(path: &Path, data: &[u8]) -> Result<StateDict, MetricsError> {
    let err = |reason: String| MetricsError::format(path, reason);
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(data))
        .map_err(|e| err(format!("corrupt zip archive: {e}")))?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl") || *n == "data.pkl")
        .map(str::to_string)
        .ok_or_else(|| err("zip archive has no data.pkl (not a torch.save file)".into()))?;
    let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or("").to_string();
    // torch.save stores entries uncompressed; an entry may inflate to at most 64 MiB plus 16 times
    // the archive, so a small archive cannot make the reader allocate gigabytes (a zip bomb).
    let limit = (64u64 << 20) + 16 * data.len() as u64;
    let read_entry = |zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
                      name: &str|
     -> Result<Vec<u8>, MetricsError> {
        let f = zip
            .by_name(name)
            .map_err(|e| err(format!("zip entry {name}: {e}")))?;
        let mut buf = Vec::with_capacity(f.size().min(limit) as usize);
        f.take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| err(format!("zip entry {name}: {e}")))?;
        if buf.len() as u64 > limit {
            return Err(err(format!(
                "zip entry {name} inflates past {limit} bytes (64 MiB + 16x the archive; a zip bomb?)"
            )));
        }
        Ok(buf)
    };
    if let Ok(bo) = read_entry(&mut zip, &format!("{prefix}byteorder")) {
        if bo != b"little" {
            return Err(err(format!(
                "byte order {:?} is not supported",
                String::from_utf8_lossy(&bo)
            )));
        }
    }
    let pkl = read_entry(&mut zip, &pkl_name)?;
    let mut pos = 0;
    let obj = pickle::load(&pkl, &mut pos).map_err(&err)?;
    let mut refs = Vec::new();
    collect(&obj, "", &mut refs).map_err(&err)?;
    let mut storages = HashMap::new();
    for (name, t) in &refs {
        let key = &t.storage.key;
        if storages.contains_key(key) {
            continue;
        }
        let bytes = read_entry(&mut zip, &format!("{prefix}data/{key}"))?;
        let count = t.storage.numel;
        let flat = tensor_from_bytes(&bytes, &[count as i64], t.storage.kind)
            .map_err(|e| err(format!("{name}: storage {key}: {e}")))?;
        storages.insert(key.clone(), (flat, count));
    }
    materialise(path, refs, &storages)
}

fn load_safetensors(path: &Path, data: &[u8]) -> Result<StateDict, MetricsError> {
    use safetensors::Dtype;
    let st = safetensors::SafeTensors::deserialize(data)
        .map_err(|e| MetricsError::format(path, format!("corrupt safetensors file: {e}")))?;
    let mut out = StateDict::new();
    for (name, view) in st.tensors() {
        let kind = match view.dtype() {
            Dtype::F32 => Kind::Float,
            Dtype::F64 => Kind::Double,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::I64 => Kind::Int64,
            Dtype::I32 => Kind::Int,
            Dtype::I16 => Kind::Int16,
            Dtype::I8 => Kind::Int8,
            Dtype::U8 => Kind::Uint8,
            Dtype::BOOL => Kind::Bool,
            other => {
                return Err(MetricsError::format(
                    path,
                    format!("{name}: unsupported dtype {other:?}"),
                ))
            }
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = tensor_from_bytes(view.data(), &shape, kind)
            .map_err(|e| MetricsError::format(path, format!("{name}: {e}")))?;
        out.insert(name, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_formats() {
        assert_eq!(detect_format(b"PK\x03\x04rest"), Some(TorchFileFormat::Zip));
        assert_eq!(
            detect_format(&[0x80, 0x02, 0x8a]),
            Some(TorchFileFormat::Legacy)
        );
        assert_eq!(
            detect_format(b"\x10\0\0\0\0\0\0\0{\"a\":1}"),
            Some(TorchFileFormat::Safetensors)
        );
        assert_eq!(detect_format(b"<html>"), None);
        assert_eq!(detect_format(b""), None);
    }

    #[test]
    fn byte_length_is_checked_before_building_a_tensor() {
        let b = [0u8; 12];
        assert!(tensor_from_bytes(&b, &[3], Kind::Float).is_ok());
        assert!(tensor_from_bytes(&b, &[4], Kind::Float).is_err());
        assert!(tensor_from_bytes(&b, &[-1], Kind::Float).is_err());
        assert!(tensor_from_bytes(&b, &[i64::MAX, i64::MAX], Kind::Float).is_err());
    }

    #[test]
    fn strided_views_must_stay_inside_their_storage() {
        let flat = Tensor::arange(6, (Kind::Float, tch::Device::Cpu));
        let sref = StorageRef {
            key: "0".into(),
            kind: Kind::Float,
            numel: 6,
            view: None,
        };
        let t = |offset, size: Vec<i64>, stride: Vec<i64>| TensorRef {
            storage: sref.clone(),
            offset,
            size,
            stride,
        };
        let ok = rebuild(&flat, 6, &t(0, vec![3, 2], vec![1, 3])).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(ok.flatten(0, -1)).unwrap(),
            [0., 3., 1., 4., 2., 5.]
        );
        assert!(rebuild(&flat, 6, &t(1, vec![3, 2], vec![2, 1])).is_err());
        assert!(rebuild(&flat, 6, &t(0, vec![2], vec![1, 1])).is_err());
        assert!(rebuild(&flat, 6, &t(-1, vec![2], vec![1])).is_err());
        assert!(rebuild(&flat, 6, &t(0, vec![i64::MAX], vec![i64::MAX])).is_err());
        assert_eq!(
            rebuild(&flat, 6, &t(9, vec![0, 4], vec![4, 1]))
                .unwrap()
                .size(),
            [0, 4]
        );
    }

    #[test]
    fn explicit_path_wins_over_the_environment() {
        let env = Some(std::ffi::OsString::from("/env/w.pth"));
        let p = choose_weights(Some(Path::new("/flag/w.pth")), env.clone()).unwrap();
        assert_eq!(p, Path::new("/flag/w.pth"));
        assert_eq!(choose_weights(None, env).unwrap(), Path::new("/env/w.pth"));
        let e = choose_weights(None, Some("".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pt_inception-2015-12-05-6726825d.pth") && e.contains("GANTRY_FID_WEIGHTS")
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = load_state_dict(Path::new("/nonexistent/w.pth")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/w.pth: "), "{e}");
    }
}
