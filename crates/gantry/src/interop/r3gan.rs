//! brownvc/R3GAN network pickles (its training code is stylegan2-ada's, so a snapshot is the same
//! dict of `G`, `D`, `G_ema`) <-> gantry's `r3gan`.
//!
//! R3GAN's `training.networks.Generator` / `Discriminator` are plain modules (not persistent
//! classes) wrapping `R3GAN.Networks` as `Model`, so there are no constructor arguments in the
//! pickle: the settings are read off the shapes (stage count, widths, blocks, cardinality,
//! expansion, kernel, label embedding). gantry's R3GAN uses the reference's module paths, so
//! the names map by dropping the `Model.` prefix and the `Resampler.Kernel` buffers (checked
//! to be the [1,2,1] low-pass gantry uses).
//!
//! Departures: stages the reference runs in bfloat16 (`FP16Stages`) run in fp32 in gantry; the
//! label embeddings must be `NoiseDimension` wide in G and `WidthPerStage[0]` wide in D (what
//! R3GAN's train.py sets).

use super::{Export, ExportedNet, Imported, Tensors};
use crate::error::{Error, Result};
use crate::models::r3gan::R3ganConfig;
use crate::models::stylegan2::ops;
use crate::models::{DataShape, ModelConfig};
use gantry_metrics::module_pickle::PickledModule;
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub(super) fn recognises(g: &PickledModule) -> bool {
    g.class == "Generator" && g.state.contains_key("Model.AggregationLayer.Layer.weight")
}

fn shape(m: &PickledModule, key: &str, rank: usize, file: &Path) -> Result<Vec<i64>> {
    let key = format!("Model.{key}");
    super::dims(m.state.get(&key), &key, rank, file)
}

/// The settings of an R3GAN generator, from its shapes.
fn generator_config(g: &PickledModule, file: &Path) -> Result<(R3ganConfig, DataShape)> {
    let stages = (0..)
        .take_while(|s| {
            g.state
                .keys()
                .any(|k| k.starts_with(&format!("Model.MainLayers.{s}.")))
        })
        .count();
    if stages < 2 {
        return Err(Error::input(
            file,
            format!("has {stages} generator stage(s); gantry's r3gan starts at 8x8"),
        ));
    }
    let (mut widths, mut cards, mut blocks) = (Vec::new(), Vec::new(), Vec::new());
    let (mut expansion, mut kernel) = (None, None);
    for s in 0..stages {
        let pre = format!("Model.MainLayers.{s}.Layers.");
        let n = (1..)
            .take_while(|i| {
                g.state
                    .contains_key(&format!("{pre}{i}.LinearLayer1.Layer.weight"))
            })
            .count();
        let width = if s == 0 {
            shape(g, "MainLayers.0.Layers.0.Basis", 3, file)?[0]
        } else {
            let key = format!("MainLayers.{s}.Layers.0.LinearLayer.Layer.weight");
            if g.state.contains_key(&format!("Model.{key}")) {
                shape(g, &key, 4, file)?[0]
            } else {
                *widths.last().expect("stage 0 came first")
            }
        };
        widths.push(width);
        blocks.push(n as i64);
        if n > 0 {
            let w1 = shape(
                g,
                &format!("MainLayers.{s}.Layers.1.LinearLayer1.Layer.weight"),
                4,
                file,
            )?;
            let w2 = shape(
                g,
                &format!("MainLayers.{s}.Layers.1.LinearLayer2.Layer.weight"),
                4,
                file,
            )?;
            expansion = Some(w1[0] / w1[1]);
            kernel = Some(w2[3]);
            cards.push(w2[0] / w2[1]);
        } else {
            cards.push(cards.last().copied().unwrap_or(1));
        }
    }
    let (Some(expansion), Some(kernel)) = (expansion, kernel) else {
        return Err(Error::input(file, "has no residual blocks at all"));
    };
    let z_in = shape(g, "MainLayers.0.Layers.0.LinearLayer.weight", 2, file)?[1];
    let embed = match g.state.contains_key("Model.EmbeddingLayer.weight") {
        true => Some(shape(g, "EmbeddingLayer.weight", 2, file)?),
        false => None,
    };
    let (z_dim, num_classes) = match &embed {
        Some(e) => {
            let z = z_in - e[0];
            if e[0] != z {
                return Err(Error::input(
                    file,
                    format!("G embeds the label to {} features; gantry's r3gan embeds it to z_dim ({z})", e[0]),
                ));
            }
            (z, Some(e[1]))
        }
        None => (z_in, None),
    };
    let channels = shape(g, "AggregationLayer.Layer.weight", 4, file)?[0];
    let cfg = R3ganConfig {
        z_dim,
        widths,
        cardinality: cards,
        blocks,
        expansion,
        kernel,
        conditional: embed.is_some(),
    };
    let resolution = 4 << (stages - 1);
    Ok((cfg, DataShape::image(channels, resolution, num_classes)))
}

fn to_gantry(m: &PickledModule, what: &str, file: &Path) -> Result<Tensors> {
    let filter = ops::setup_filter(&ops::BLUR_TAPS, Device::Cpu);
    let mut out = Tensors::new();
    for (k, t) in &m.state {
        let Some(name) = k.strip_prefix("Model.") else {
            return Err(Error::input(
                file,
                format!("{what}.{k} is outside the wrapped Model"),
            ));
        };
        if name.ends_with(".Resampler.Kernel") {
            if t.size() != filter.size()
                || !t.to_kind(Kind::Float).allclose(&filter, 1e-6, 1e-7, false)
            {
                return Err(Error::input(
                    file,
                    format!("{what}.{k} is not the [1,2,1] low-pass gantry resamples with"),
                ));
            }
            continue;
        }
        out.insert(name.to_string(), t.to_kind(Kind::Float));
    }
    Ok(out)
}

pub(super) fn import(
    path: &Path,
    g: Option<&PickledModule>,
    g_ema: Option<&PickledModule>,
    d: Option<&PickledModule>,
) -> Result<Imported> {
    let main = g_ema.or(g).expect("the caller found G or G_ema");
    let (cfg, shape) = generator_config(main, path)?;
    let mut stores = Vec::new();
    for (store, m, what) in [("g", g, "G"), ("g_ema", g_ema, "G_ema"), ("d", d, "D")] {
        if let Some(m) = m {
            if store != "d" && generator_config(m, path)? != (cfg.clone(), shape) {
                return Err(Error::input(
                    path,
                    "G and G_ema are built with different settings",
                ));
            }
            stores.push((store, to_gantry(m, what, path)?));
        }
    }
    Ok(Imported {
        model: ModelConfig::R3gan(cfg),
        shape,
        stores,
        origin: "an R3GAN network pickle".into(),
        notes: vec![],
    })
}

/// Where the reference keeps `Resampler.Kernel` buffers: G's upsampling layer opens every stage
/// after the first; D's downsampling layer closes every stage but the last.
fn kernels(cfg: &R3ganConfig, resolution: i64, generator: bool) -> Vec<String> {
    let n = (resolution as f64).log2() as usize - 1;
    let per = |l: &[i64]| {
        if l.len() == 1 {
            vec![l[0]; n]
        } else {
            l.to_vec()
        }
    };
    let blocks = per(&cfg.blocks);
    if generator {
        (1..n)
            .map(|s| format!("Model.MainLayers.{s}.Layers.0.Resampler.Kernel"))
            .collect()
    } else {
        let d_blocks: Vec<i64> = blocks.iter().rev().copied().collect();
        (0..n - 1)
            .map(|s| {
                format!(
                    "Model.MainLayers.{s}.Layers.{}.Resampler.Kernel",
                    d_blocks[s]
                )
            })
            .collect()
    }
}

/// R3GAN's `training.networks.Generator` / `Discriminator` state dicts and constructor
/// arguments.
pub fn export(cfg: &R3ganConfig, shape: &DataShape, stores: &[(&str, Tensors)]) -> Result<Export> {
    if shape.channels != 3 {
        return Err(Error::config(
            "--format",
            format!(
                "R3GAN's code makes 3-channel images; this run has {} (use --format gantry)",
                shape.channels
            ),
        ));
    }
    let n = (shape.resolution as f64).log2() as usize - 1;
    let per = |l: &[i64]| {
        if l.len() == 1 {
            vec![l[0]; n]
        } else {
            l.to_vec()
        }
    };
    let (widths, cards, blocks) = (per(&cfg.widths), per(&cfg.cardinality), per(&cfg.blocks));
    let filter = ops::setup_filter(&ops::BLUR_TAPS, Device::Cpu);
    let nets = stores
        .iter()
        .map(|(store, t)| {
            let generator = *store != "d";
            let mut tensors: Vec<(String, Tensor)> = t
                .iter()
                .map(|(k, v)| (format!("Model.{k}"), v.shallow_clone()))
                .collect();
            tensors.extend(
                kernels(cfg, shape.resolution, generator)
                    .into_iter()
                    .map(|k| (k, filter.shallow_clone())),
            );
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            ExportedNet {
                name: match *store {
                    "g" => "G",
                    "g_ema" => "G_ema",
                    _ => "D",
                }
                .into(),
                tensors,
            }
        })
        .collect();
    let c_dim = if cfg.conditional {
        shape.num_classes.unwrap_or(0)
    } else {
        0
    };
    let rev = |v: &[i64]| v.iter().rev().copied().collect::<Vec<i64>>();
    let mut g = serde_json::json!({
        "NoiseDimension": cfg.z_dim, "WidthPerStage": widths, "CardinalityPerStage": cards,
        "BlocksPerStage": blocks, "ExpansionFactor": cfg.expansion, "KernelSize": cfg.kernel,
        "c_dim": c_dim, "img_resolution": shape.resolution, "FP16Stages": [],
    });
    let mut d = serde_json::json!({
        "WidthPerStage": rev(&widths), "CardinalityPerStage": rev(&cards), "BlocksPerStage": rev(&blocks),
        "ExpansionFactor": cfg.expansion, "KernelSize": cfg.kernel,
        "c_dim": c_dim, "img_resolution": shape.resolution, "FP16Stages": [],
    });
    if cfg.conditional {
        g["ConditionEmbeddingDimension"] = cfg.z_dim.into();
        d["ConditionEmbeddingDimension"] = widths[0].into();
    }
    Ok(Export {
        nets,
        kwargs: serde_json::json!({
            "format": "R3GAN",
            "G": {"class_name": "training.networks.Generator", "kwargs": g},
            "D": {"class_name": "training.networks.Discriminator", "kwargs": d},
        }),
    })
}
