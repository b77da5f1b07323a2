//! Small file helpers, and the TOML layering every configuration uses (defaults, file, `--set`).

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through `<path>.tmp`, fsync and rename, so readers (and a kill at any
/// moment) see either the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Bytes free for an unprivileged writer on the filesystem holding `path` (or its nearest
/// existing ancestor); `None` where it cannot be told.
pub fn available_bytes(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct; `c` is a valid C string.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut st) == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
    }
}

pub use crate::error::human_bytes;

/// Memory this process may still use, in bytes: `GANTRY_MEMORY_LIMIT` (bytes) where set,
/// otherwise the kernel's estimate of available memory, capped by a cgroup (container) limit;
/// `None` where it cannot be told.
pub fn available_memory() -> Option<u64> {
    if let Some(v) = std::env::var("GANTRY_MEMORY_LIMIT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(v);
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())?
        * 1024;
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .map(|max| max.saturating_sub(read("/sys/fs/cgroup/memory.current").unwrap_or(0)));
    Some(cgroup.map_or(available, |c| c.min(available)))
}

/// The size settings of `sections` of a resolved TOML configuration, for a message about
/// memory: every integer (or list of integers) key, `model.ngf = 64, fq.k = [1024]`, at most
/// about 200 characters.
pub fn size_settings(resolved: &str, sections: &[&str]) -> String {
    let Ok(root) = resolved.parse::<toml::Table>() else {
        return sections.join(", ");
    };
    fn walk(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    walk(&format!("{prefix}.{k}"), v, out);
                }
            }
            toml::Value::Integer(_) => out.push(format!("{prefix} = {v}")),
            toml::Value::Array(a)
                if !a.is_empty() && a.iter().all(|x| matches!(x, toml::Value::Integer(_))) =>
            {
                out.push(format!("{prefix} = {v}"))
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    let root = toml::Value::Table(root);
    for s in sections {
        if let Some(v) = s.split('.').try_fold(&root, |v, part| v.get(part)) {
            walk(s, v, &mut out);
        }
    }
    let mut text = String::new();
    for item in out {
        if text.len() + item.len() > 200 {
            text.push_str(", ...");
            break;
        }
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push_str(&item);
    }
    text
}

/// Deep-merges `over` into `base` (tables merge, everything else replaces).
pub fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

pub fn parse_toml(text: &str, origin: &str) -> Result<toml::Value> {
    text.parse::<toml::Table>()
        .map(toml::Value::Table)
        .map_err(|e| {
            let msg = e.message().trim().replace('\n', "; ");
            let line = e.span().map(|s| text[..s.start].lines().count().max(1));
            let where_ = line.map(|l| format!(" (line {l})")).unwrap_or_default();
            Error::config(origin, format!("bad TOML{where_}: {msg}"))
        })
}

/// One `--set key=value`: the value is read as TOML (`3`, `true`, `["b16"]`, `"x"`), or else as a
/// bare string (`data.path=/data/cats`).
pub fn set_value(root: &mut toml::Value, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| Error::config(assignment, "expected --set key=value"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|s| s.is_empty()) {
        return Err(Error::config(
            assignment,
            "expected --set key=value with a dotted key",
        ));
    }
    let value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").expect("parsed one key"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let mut over = value;
    for part in key.split('.').rev() {
        let mut t = toml::Table::new();
        t.insert(part.to_string(), over);
        over = toml::Value::Table(t);
    }
    merge(root, over);
    Ok(())
}

/// A serde error about an unknown name (`unknown field `stpes`, expected one of `steps`, ...`,
/// also after gantry's rewording to `unknown key ... valid: ...`, and `unknown variant`) with the
/// closest valid name put right after the unknown one: `unknown key `stpes` (did you mean
/// `steps`?), valid: ...`. Any other message is returned as it is. The one place configuration
/// keys get their "did you mean" (GAN, classification and translation configurations).
pub fn did_you_mean(msg: &str) -> String {
    let Some(at) = ["unknown field `", "unknown key `", "unknown variant `"]
        .iter()
        .filter_map(|p| msg.find(p).map(|i| i + p.len()))
        .min()
    else {
        return msg.to_string();
    };
    let Some(len) = msg[at..].find('`') else {
        return msg.to_string();
    };
    let unknown = &msg[at..at + len];
    let end = at + len + 1;
    // The valid names: every other back-quoted word after it.
    let valid: Vec<&str> = msg[end..].split('`').skip(1).step_by(2).collect();
    match closest(unknown, &valid) {
        Some(best) if !msg.contains("did you mean") => {
            format!("{} (did you mean `{best}`?){}", &msg[..end], &msg[end..])
        }
        _ => msg.to_string(),
    }
}

/// The name in `valid` closest to `word` in edit distance (a swap of neighbours counts one
/// edit), if close enough to be a typo of it: at most 1 edit in names of up to 3 characters, 2
/// up to 6, 3 beyond, and fewer edits than the longer of the two has characters; failing that,
/// the one name that starts with `word` (3 characters or more).
pub fn closest<'a>(word: &str, valid: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let allowed = match word.chars().count() {
        0..=3 => 1,
        4..=6 => 2,
        _ => 3,
    };
    let best = valid
        .iter()
        .map(|v| (edit_distance(&lower, &v.to_ascii_lowercase()), *v))
        .filter(|(d, v)| *d <= allowed && *d < v.chars().count().max(lower.chars().count()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v);
    best.or_else(|| {
        let mut prefixed = valid
            .iter()
            .filter(|v| lower.chars().count() >= 3 && v.to_ascii_lowercase().starts_with(&lower));
        match (prefixed.next(), prefixed.next()) {
            (Some(v), None) => Some(*v),
            _ => None,
        }
    })
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbouring characters, one edit each.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * w + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut v = (d[(i - 1) * w + j] + 1)
                    .min(d[i * w + j - 1] + 1)
                    .min(d[(i - 1) * w + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    v = v.min(d[(i - 2) * w + j - 2] + 1);
                }
                v
            };
        }
    }
    d[a.len() * w + b.len()]
}

/// A task's configuration (classification, translation): TOML layers (defaults, a file or preset,
/// `--set`) read into one checked struct, and back to TOML for run directories. The GAN
/// configuration (`RunConfig`) reads the same layers with its own error wording.
pub trait TaskConfig: serde::Serialize + serde::de::DeserializeOwned + Default {
    /// Everything checkable without opening data.
    fn validate(&self) -> Result<()>;

    /// The defaults with `layers` merged on top in order, then `sets`; validated.
    fn layered(layers: Vec<toml::Value>, sets: &[String]) -> Result<Self> {
        let mut root = to_value(&Self::default())?;
        for layer in layers {
            merge(&mut root, layer);
        }
        Self::apply(root, sets)
    }

    /// This configuration with `--set` assignments on top, validated.
    fn with_sets(&self, sets: &[String]) -> Result<Self> {
        Self::apply(to_value(self)?, sets)
    }

    /// `sets` on `root`, read and validated.
    fn apply(mut root: toml::Value, sets: &[String]) -> Result<Self> {
        for s in sets {
            set_value(&mut root, s)?;
        }
        let cfg = Self::from_value(root)?.resolved();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Settings whose default depends on others, made concrete (so a saved configuration says
    /// what ran); none by default.
    fn resolved(self) -> Self {
        self
    }

    /// Reads a TOML value, naming the key of the first bad value.
    fn from_value(root: toml::Value) -> Result<Self> {
        serde_path_to_error::deserialize(root).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            Error::config(
                path,
                did_you_mean(inner.lines().next().unwrap_or_default().trim()),
            )
        })
    }

    /// Reads a resolved configuration as saved in a checkpoint (`origin` names it in errors).
    fn from_toml(text: &str, origin: &str) -> Result<Self> {
        Self::from_value(parse_toml(text, origin)?)
    }

    fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

fn to_value<T: serde::Serialize>(cfg: &T) -> Result<toml::Value> {
    toml::Value::try_from(cfg).map_err(|e| Error::config("config", e.to_string()))
}

/// The dotted keys where two serialisable configurations differ (resume checks).
pub fn changed_keys<T: serde::Serialize>(a: &T, b: &T) -> Vec<String> {
    fn walk(prefix: &str, a: &toml::Value, b: Option<&toml::Value>, out: &mut Vec<String>) {
        match (a, b) {
            (toml::Value::Table(ta), Some(toml::Value::Table(tb))) => {
                let keys: std::collections::BTreeSet<&String> =
                    ta.keys().chain(tb.keys()).collect();
                for k in keys {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    match ta.get(k) {
                        Some(va) => walk(&p, va, tb.get(k), out),
                        None => out.push(p),
                    }
                }
            }
            (a, Some(b)) if a == b => {}
            _ => out.push(prefix.to_string()),
        }
    }
    let a = toml::Value::try_from(a).expect("configurations serialise");
    let b = toml::Value::try_from(b).expect("configurations serialise");
    let mut out = Vec::new();
    walk("", &a, Some(&b), &mut out);
    out
}

/// `42 s`, `7 min`, `3.5 h`: a duration for progress lines.
pub fn human_duration(secs: f64) -> String {
    if secs < 90.0 {
        format!("{secs:.0} s")
    } else if secs < 5400.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{changed_keys, closest, did_you_mean};

    #[test]
    fn did_you_mean_names_the_closest_key_before_the_list() {
        let serde = "unknown field `stpes`, expected one of `steps`, `batch_size`, `seed`";
        assert_eq!(
            did_you_mean(serde),
            "unknown field `stpes` (did you mean `steps`?), expected one of `steps`, `batch_size`, `seed`"
        );
        let ours = "unknown key `sede`, valid: `steps`, `seed`";
        assert_eq!(
            did_you_mean(ours),
            "unknown key `sede` (did you mean `seed`?), valid: `steps`, `seed`"
        );
        assert_eq!(
            did_you_mean("unknown variant `hinj`, expected one of `hinge`, `wasserstein`"),
            "unknown variant `hinj` (did you mean `hinge`?), expected one of `hinge`, `wasserstein`"
        );
        // Nothing close: the message as it was.
        let far = "unknown key `colour`, valid: `steps`, `seed`";
        assert_eq!(did_you_mean(far), far);
        assert_eq!(did_you_mean("expected a number"), "expected a number");
        assert_eq!(
            closest("trian", &["data", "train", "translate"]),
            Some("train")
        );
        assert_eq!(closest("kk", &["k", "layers"]), Some("k"));
        assert_eq!(
            closest("batch", &["batch_size", "steps"]),
            Some("batch_size")
        );
        assert_eq!(closest("BATCH_SIZE", &["batch_size"]), Some("batch_size"));
        assert_eq!(closest("x", &["y", "z"]), None);
    }

    #[derive(serde::Serialize)]
    struct Inner {
        steps: u64,
        lr: f64,
    }

    #[derive(serde::Serialize)]
    struct Outer {
        name: String,
        train: Inner,
        extra: Option<u32>,
    }

    #[test]
    fn changed_keys_names_each_differing_leaf() {
        let a = Outer {
            name: "x".into(),
            train: Inner { steps: 1, lr: 0.1 },
            extra: None,
        };
        let same = Outer {
            name: "x".into(),
            train: Inner { steps: 1, lr: 0.1 },
            extra: None,
        };
        assert!(changed_keys(&a, &same).is_empty());
        let b = Outer {
            name: "y".into(),
            train: Inner { steps: 2, lr: 0.1 },
            extra: Some(3),
        };
        // A key present on one side only counts too (None is absent in TOML).
        assert_eq!(changed_keys(&a, &b), vec!["extra", "name", "train.steps"]);
    }
}

thread_local! {
    static HOST_READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Reads of tensor values to the host made on this thread through [`read_f64`], [`read_i64`]
/// and [`read_vec`]: on a GPU each is a synchronisation that stalls the queue, so the training
/// loops read only through these, and a test pins how many a step makes.
pub fn host_reads() -> u64 {
    HOST_READS.with(|c| c.get())
}

fn count_read() {
    HOST_READS.with(|c| c.set(c.get() + 1));
}

/// The value of a one-element tensor (one counted host read).
pub fn read_f64(t: &tch::Tensor) -> f64 {
    count_read();
    t.double_value(&[])
}

/// The value of a one-element integer tensor (one counted host read).
pub fn read_i64(t: &tch::Tensor) -> i64 {
    count_read();
    t.int64_value(&[])
}

/// Every value of a tensor, flattened, as f64 (one counted host read).
pub fn read_vec(t: &tch::Tensor) -> Vec<f64> {
    count_read();
    Vec::<f64>::try_from(
        t.detach()
            .to_kind(tch::Kind::Double)
            .to_device(tch::Device::Cpu)
            .reshape([-1]),
    )
    .unwrap_or_default()
}
