//! Before step 0 of a data-parallel job, every rank shows the others what it is about to run:
//! its resolved configuration (less what may differ per rank) and its parameters' names and
//! shapes. Any difference stops every rank with one line naming it, where otherwise a different
//! `model.hidden` aborts inside gloo ("Received data size doesn't match"), a different
//! `train.steps` ends in a collective timeout, and a different `train.g_lr` trains silently apart.

use crate::dist::Comm;
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Keys that may differ between ranks: where each finds its device and its data, and how it
/// reads them.
pub const PER_RANK_KEYS: &[&str] = &[
    "train.device",
    "train.threads",
    "data.path",
    "data.workers",
    "data.prefetch",
];

/// Every rank's `text`, in rank order (one process: its own).
fn all_gather_text(comm: &Comm, text: &str) -> Result<Vec<String>> {
    if !comm.distributed() {
        return Ok(vec![text.to_string()]);
    }
    let len = Tensor::from_slice(&[text.len() as i64]);
    let lens: Vec<i64> = Vec::try_from(comm.all_gather(&len)?).map_err(|e| Error::Dist {
        rank: comm.rank,
        msg: format!("text lengths: {e}"),
    })?;
    let longest = lens.iter().copied().max().unwrap_or(0).max(1);
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(longest as usize, 0);
    let all = comm.all_gather(&Tensor::from_slice(&bytes).to_kind(Kind::Uint8))?;
    let all: Vec<u8> = Vec::try_from(all.to_device(Device::Cpu)).map_err(|e| Error::Dist {
        rank: comm.rank,
        msg: format!("texts: {e}"),
    })?;
    Ok(all
        .chunks(longest as usize)
        .zip(&lens)
        .map(|(chunk, &n)| String::from_utf8_lossy(&chunk[..n as usize]).into_owned())
        .collect())
}

/// The resolved configuration `resolved` (TOML) without [`PER_RANK_KEYS`].
fn shared_part(resolved: &str) -> Result<toml::Value> {
    let mut v: toml::Value = toml::from_str(resolved)
        .map_err(|e| Error::config("config", format!("resolved configuration: {e}")))?;
    for key in PER_RANK_KEYS {
        let (section, name) = key.split_once('.').expect("dotted");
        if let Some(t) = v.get_mut(section).and_then(|s| s.as_table_mut()) {
            t.remove(name);
        }
    }
    Ok(v)
}

/// The ranks (other than this one) whose text differs from this rank's, with their text.
fn others_differing(comm: &Comm, texts: &[String]) -> Vec<(usize, String)> {
    let own = &texts[comm.rank];
    texts
        .iter()
        .enumerate()
        .filter(|(r, t)| *r != comm.rank && *t != own)
        .map(|(r, t)| (r, t.clone()))
        .collect()
}

/// Stops every rank, with the differing keys, when the ranks' configurations differ.
pub fn configuration(comm: &Comm, resolved: &str) -> Result<()> {
    if !comm.distributed() {
        return Ok(());
    }
    let own = shared_part(resolved)?;
    let text = format!(
        "gantry {}\n{}",
        env!("CARGO_PKG_VERSION"),
        toml::to_string(&own).expect("a parsed table serialises")
    );
    let texts = all_gather_text(comm, &text)?;
    let Some((rank, other)) = others_differing(comm, &texts).into_iter().next() else {
        return Ok(());
    };
    let (version, body) = other.split_once('\n').unwrap_or((&other, ""));
    let theirs: toml::Value = toml::from_str(body)
        .map_err(|e| Error::config("config", format!("rank {rank}'s configuration: {e}")))?;
    // Keys set on either side only count too: changed_keys walks both tables' keys.
    let keys = crate::util::changed_keys(&own, &theirs);
    if keys.is_empty() {
        return Err(Error::config(
            "gantry",
            format!(
                "rank {} runs {}, rank {rank} runs {version}: every rank of a job needs the same gantry",
                comm.rank,
                texts[comm.rank].lines().next().unwrap_or_default()
            ),
        ));
    }
    let value = |v: &toml::Value, key: &str| {
        key.split('.')
            .try_fold(v, |v, k| v.get(k))
            .map_or("(unset)".to_string(), |x| x.to_string())
    };
    let shown: Vec<String> = keys
        .iter()
        .take(5)
        .map(|k| {
            format!(
                "{k} = {} here, {} on rank {rank}",
                value(&own, k),
                value(&theirs, k)
            )
        })
        .collect();
    Err(Error::config(
        keys[0].clone(),
        format!(
            "the ranks of this job run different configurations (rank {} vs rank {rank}: {}{}); every rank must be started with the same settings (only {} may differ)",
            comm.rank,
            shown.join("; "),
            if keys.len() > 5 { format!("; and {} more", keys.len() - 5) } else { String::new() },
            PER_RANK_KEYS.join(", ")
        ),
    ))
}

/// Stops every rank, naming the first differing parameter, when the ranks built different
/// networks (`params`: name and shape of every parameter and buffer, in a fixed order).
pub fn parameters(comm: &Comm, params: &[(String, Vec<i64>)]) -> Result<()> {
    if !comm.distributed() {
        return Ok(());
    }
    let line = |(n, s): &(String, Vec<i64>)| format!("{n} {s:?}");
    let text: Vec<String> = params.iter().map(line).collect();
    let texts = all_gather_text(comm, &text.join("\n"))?;
    let Some((rank, other)) = others_differing(comm, &texts).into_iter().next() else {
        return Ok(());
    };
    let theirs: Vec<&str> = other.lines().collect();
    let first = text
        .iter()
        .map(String::as_str)
        .zip(theirs.iter().copied())
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("{a} here, {b} on rank {rank}"))
        .unwrap_or_else(|| {
            format!(
                "{} tensors here, {} on rank {rank}",
                text.len(),
                theirs.len()
            )
        });
    Err(Error::config(
        "model",
        format!(
            "the ranks of this job built different networks (rank {} vs rank {rank}: {first}); every rank must run the same gantry and configuration",
            comm.rank
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_rank_keys_are_left_out_of_the_comparison() {
        let a =
            "[train]\ndevice = \"cuda:0\"\nsteps = 10\n[data]\npath = \"/a\"\nkind = \"mnist\"\n";
        let b =
            "[train]\ndevice = \"cuda:1\"\nsteps = 10\n[data]\npath = \"/b\"\nkind = \"mnist\"\n";
        assert_eq!(shared_part(a).unwrap(), shared_part(b).unwrap());
        let c =
            "[train]\ndevice = \"cuda:1\"\nsteps = 11\n[data]\npath = \"/b\"\nkind = \"mnist\"\n";
        let keys = crate::util::changed_keys(&shared_part(a).unwrap(), &shared_part(c).unwrap());
        assert_eq!(keys, ["train.steps"]);
        // A key on one side only is named from either side.
        let d = "[train]\nsteps = 10\n[data]\nkind = \"mnist\"\nholdout = 5.0\n";
        let (a, d) = (shared_part(a).unwrap(), shared_part(d).unwrap());
        assert_eq!(crate::util::changed_keys(&a, &d), ["data.holdout"]);
        assert_eq!(crate::util::changed_keys(&d, &a), ["data.holdout"]);
    }
}
