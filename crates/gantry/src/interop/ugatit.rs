//! UGATIT-pytorch checkpoints (`UGATIT.save`: one `.pt` holding the state dicts `genA2B`,
//! `genB2A`, `disGA`, `disGB`, `disLA`, `disLB`) <-> gantry's U-GAT-IT.
//!
//! gantry's U-GAT-IT uses the reference's parameter names, so the networks map to stores by
//! prefix (`genA2B` -> `g` `g_ab.*`, `genB2A` -> `g_ba.*`, `disGA` -> `d` `ga.*`, `disGB` ->
//! `gb.*`, `disLA` -> `la.*`, `disLB` -> `lb.*`), and inside a network only torch's
//! `spectral_norm` name changes: its `<layer>.weight_orig` is gantry's `<layer>.weight`
//! (`weight_u`, `weight_v` keep theirs).
//!
//! The settings come from the shapes: `ch` from the first convolution, `n_res` from the
//! `UpBlock1_*` count, `light` and the image size from `FC.0` (the full model's FC reads the
//! `img_size/4` feature map; the light one pools first, so a light checkpoint does not record
//! its image size: UGATIT-pytorch's default 256 is assumed unless the caller says otherwise),
//! the critics' depths from their convolution counts.

use super::{dims_in, Export, ExportFormat, ExportedNet, Tensors};
use crate::error::{Error, Result};
use crate::translate::nets::UgatitConfig;
use crate::translate::train::Generators;
use crate::translate::TranslateConfig;
use std::path::Path;
use tch::{Device, Tensor};

/// The reference's network names and gantry's (store, prefix).
const NETS: [(&str, &str, &str); 6] = [
    ("genA2B", "g", "g_ab"),
    ("genB2A", "g", "g_ba"),
    ("disGA", "d", "ga"),
    ("disGB", "d", "gb"),
    ("disLA", "d", "la"),
    ("disLB", "d", "lb"),
];

/// UGATIT-pytorch's default `--img_size`, assumed for light checkpoints.
pub const DEFAULT_IMG_SIZE: i64 = 256;

/// A U-GAT-IT checkpoint in gantry's terms.
pub struct ImportedUgatit {
    pub model: UgatitConfig,
    pub channels: i64,
    /// The image size the full model's FC layer fixes; `None` for light models.
    pub resolution: Option<i64>,
    pub g: Tensors,
    pub d: Tensors,
}

pub(super) fn recognises(sd: &Tensors) -> bool {
    sd.keys().any(|k| k.starts_with("genA2B."))
}

fn count(sd: &Tensors, pred: impl Fn(&str) -> bool) -> i64 {
    sd.keys().filter(|k| pred(k)).count() as i64
}

pub fn import(sd: &Tensors, file: &Path) -> Result<ImportedUgatit> {
    let bad = |msg: String| Error::input(file, msg);
    let first = dims_in(sd, "genA2B.DownBlock.1.weight", 4, file)?;
    let (ch, channels) = (first[0], first[1]);
    let n_res = count(sd, |k| {
        k.starts_with("genA2B.UpBlock1_") && k.ends_with(".conv1.weight")
    });
    let fc = dims_in(sd, "genA2B.FC.0.weight", 2, file)?;
    let width = 4 * ch;
    let (light, resolution) = if fc[1] == width {
        (true, None)
    } else {
        let side = ((fc[1] / width) as f64).sqrt().round() as i64;
        if side * side * width != fc[1] {
            return Err(bad(format!(
                "genA2B.FC.0 reads {} features, not a square map of {width}",
                fc[1]
            )));
        }
        (false, Some(4 * side))
    };
    // A critic of n layers has n - 1 convolutions in `model` (then the CAM and the classifier).
    let depth = |net: &str| {
        count(sd, |k| {
            k.starts_with(&format!("{net}.model.")) && k.ends_with(".weight_orig")
        }) + 1
    };
    let model = UgatitConfig {
        ch,
        n_res,
        light,
        global_layers: depth("disGA"),
        local_layers: depth("disLA"),
    };
    let mut g = Tensors::new();
    let mut d = Tensors::new();
    for (net, store, prefix) in NETS {
        let found = sd.keys().any(|k| k.starts_with(&format!("{net}.")));
        if !found {
            if store == "g" {
                return Err(bad(format!("has no {net}")));
            }
            continue;
        }
        for (k, v) in sd {
            let Some(rest) = k.strip_prefix(&format!("{net}.")) else {
                continue;
            };
            let rest = rest
                .strip_suffix("_orig")
                .filter(|r| r.ends_with(".weight"))
                .unwrap_or(rest);
            let to = if store == "g" { &mut g } else { &mut d };
            to.insert(format!("{prefix}.{rest}"), v.to_kind(tch::Kind::Float));
        }
    }
    Ok(ImportedUgatit {
        model,
        channels,
        resolution,
        g,
        d,
    })
}

/// The generators of a UGATIT-pytorch checkpoint at `resolution` (default: what a full model
/// fixes, else [`DEFAULT_IMG_SIZE`]).
pub fn generators(
    sd: &Tensors,
    file: &Path,
    device: Device,
    resolution: Option<i64>,
) -> Result<(Generators, Vec<String>)> {
    let imp = import(sd, file)?;
    let mut notes = Vec::new();
    let res = match (imp.resolution, resolution) {
        (Some(fixed), Some(asked)) if fixed != asked => {
            return Err(Error::input(
                file,
                format!("is a full U-GAT-IT for {fixed}x{fixed} images, not {asked}x{asked}"),
            ))
        }
        (Some(fixed), _) => fixed,
        (None, Some(asked)) if (8..=2048).contains(&asked) && asked % 4 == 0 => asked,
        (None, Some(asked)) => {
            return Err(Error::config(
                "--size",
                format!("{asked} is not a multiple of 4 from 8 to 2048"),
            ))
        }
        (None, None) => {
            notes.push(format!(
                "a light U-GAT-IT does not record its image size; translating at {DEFAULT_IMG_SIZE}x{DEFAULT_IMG_SIZE} (UGATIT-pytorch's default)"
            ));
            DEFAULT_IMG_SIZE
        }
    };
    let gens = Generators::from_tensors(&imp.model, imp.channels, res, &imp.g, device, file)?;
    Ok((gens, notes))
}

/// gantry's tensors of one network under the reference's names (`weight` of a spectrally
/// normalised layer back to `weight_orig`).
fn network(t: &Tensors, prefix: &str) -> Vec<(String, Tensor)> {
    let mut out: Vec<(String, Tensor)> = t
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(&format!("{prefix}."))?;
            let sn = rest
                .strip_suffix(".weight")
                .is_some_and(|layer| t.contains_key(&format!("{prefix}.{layer}.weight_u")));
            let name = if sn {
                format!("{rest}_orig")
            } else {
                rest.to_string()
            };
            Some((name, v.shallow_clone()))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub fn export(
    cfg: &TranslateConfig,
    g: &Tensors,
    d: Option<&Tensors>,
    format: ExportFormat,
) -> Result<Export> {
    let channels = g
        .get("g_ab.DownBlock.1.weight")
        .map(|w| w.size()[1])
        .ok_or_else(|| {
            Error::config(
                "--checkpoint",
                "the run's g store has no g_ab.DownBlock.1.weight",
            )
        })?;
    let m = &cfg.model;
    if format == ExportFormat::Gantry {
        // UGATIT-pytorch is U-GAT-IT's PyTorch code, and its names are gantry's already.
        return Err(Error::config(
            "--format",
            "a U-GAT-IT run exports to UGATIT-pytorch's networks (--format reference)",
        ));
    }
    let mut nets = Vec::new();
    for (net, store, prefix) in NETS {
        let t = if store == "g" { Some(g) } else { d };
        if let Some(t) = t {
            nets.push(ExportedNet {
                name: net.into(),
                tensors: network(t, prefix),
            });
        }
    }
    let gen = serde_json::json!({
        "class_name": "networks.ResnetGenerator",
        "kwargs": {"input_nc": channels, "output_nc": channels, "ngf": m.ch, "n_blocks": m.n_res,
                   "img_size": cfg.data.resolution, "light": m.light},
    });
    let dis = |layers: i64| {
        serde_json::json!({
            "class_name": "networks.Discriminator",
            "kwargs": {"input_nc": channels, "ndf": m.ch, "n_layers": layers},
        })
    };
    Ok(Export {
        nets,
        kwargs: serde_json::json!({
            "format": "UGATIT-pytorch",
            "genA2B": gen, "genB2A": gen,
            "disGA": dis(m.global_layers), "disGB": dis(m.global_layers),
            "disLA": dis(m.local_layers), "disLB": dis(m.local_layers),
        }),
    })
}
