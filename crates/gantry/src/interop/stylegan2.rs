//! stylegan2-ada-pytorch's `training.networks.Generator` / `Discriminator` (also pickled by the
//! AdaptiveMix StyleGAN2 code, which builds on it) <-> gantry's `stylegan2`.
//!
//! gantry's StyleGAN2 already uses the reference's parameter names, so the mapping is:
//! - the reference's persistent `resample_filter` buffers are checked to be the [1,3,3,1]
//!   filter and dropped (gantry's filters are constants, not state);
//! - gantry's `pl_mean` (the path-length EMA, which the reference keeps in its loss object) starts
//!   at 0 on import and is left out on export;
//! - everything else is copied as it is.
//!
//! Constructor arguments map to `StyleGan2Config` fields; an argument gantry cannot reproduce
//! (another architecture than skip G / resnet D, another filter, a custom layer width) is refused
//! by name. `num_fp16_res` and `conv_clamp` are accepted: gantry runs those layers in fp32, where
//! the reference computes them in fp16 and clamps at `conv_clamp` (a note says so).

use super::{Imported, Kwargs, Tensors};
use crate::error::{Error, Result};
use crate::models::stylegan2::{ops, StyleGan2Config};
use crate::models::{DataShape, ModelConfig};
use gantry_metrics::module_pickle::PickledModule;
use gantry_metrics::pickle::Value;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Whether a pickled generator is stylegan2-ada's.
pub(super) fn recognises(g: &PickledModule) -> bool {
    g.class == "Generator" && g.kwarg("synthesis_kwargs").is_some()
}

/// What the G and D constructors say, in gantry's terms.
struct Translated {
    cfg: StyleGan2Config,
    shape: DataShape,
    notes: Vec<String>,
}

fn generator_config(
    g: &PickledModule,
    notes: &mut Vec<String>,
) -> Result<(StyleGan2Config, DataShape)> {
    if !g.init_args.is_empty() {
        return Err(Error::config(
            "G",
            "positional constructor arguments are not supported",
        ));
    }
    let mut k = Kwargs::new("G", &g.init_kwargs);
    let z_dim = k.int("z_dim", None)?;
    let c_dim = k.int("c_dim", Some(0))?;
    let w_dim = k.int("w_dim", None)?;
    let resolution = k.int("img_resolution", None)?;
    let channels = k.int("img_channels", None)?;
    let mut m = k.nested("mapping_kwargs")?;
    let mut s = k.nested("synthesis_kwargs")?;
    k.finish()?;
    let mapping_layers = m.int("num_layers", Some(8))?;
    let mapping_lr_mul = m.float("lr_multiplier", 0.01)?;
    m.require(
        "embed_features",
        &Value::None,
        "the label embedding is w_dim wide",
    )?;
    m.require(
        "layer_features",
        &Value::None,
        "mapping layers are w_dim wide",
    )?;
    m.require(
        "activation",
        &Value::Str("lrelu".into()),
        "gantry's mapping uses lrelu",
    )?;
    let beta = m.float("w_avg_beta", crate::models::stylegan2::W_AVG_BETA)?;
    if beta != crate::models::stylegan2::W_AVG_BETA {
        notes.push(format!(
            "G.mapping_kwargs.w_avg_beta = {beta}; fine-tuning tracks w_avg with gantry's {}",
            crate::models::stylegan2::W_AVG_BETA
        ));
    }
    m.finish()?;
    let channel_base = s.int("channel_base", Some(32768))?;
    let channel_max = s.int("channel_max", Some(512))?;
    let fp16 = s.int("num_fp16_res", Some(0))?;
    let clamp = s.opt_float("conv_clamp")?;
    s.require(
        "architecture",
        &Value::Str("skip".into()),
        "gantry's G is config F's skip generator",
    )?;
    s.require(
        "resample_filter",
        &Value::List([1, 3, 3, 1].map(Value::Int).to_vec()),
        "gantry filters with [1,3,3,1]",
    )?;
    s.require(
        "use_noise",
        &Value::Bool(true),
        "gantry's layers always add noise",
    )?;
    s.ignore("fp16_channels_last"); // a memory layout only
    s.finish()?;
    if fp16 > 0 || clamp.is_some() {
        notes.push(format!(
            "the reference runs the {fp16} highest resolutions in fp16{}; gantry computes them in fp32 \
             (clamping only under train.precision = fp16), so images differ slightly",
            clamp.map_or(String::new(), |c| format!(" clamped at {c}"))
        ));
    }
    let cfg = StyleGan2Config {
        z_dim,
        w_dim,
        channel_base,
        channel_max,
        mapping_layers,
        mapping_lr_mul,
        conditional: c_dim > 0,
        ..Default::default()
    };
    let shape = DataShape::image(channels, resolution, (c_dim > 0).then_some(c_dim));
    Ok((cfg, shape))
}

/// Checks D's constructor against G's settings and takes its minibatch-stddev settings.
fn discriminator_config(d: &PickledModule, t: &mut Translated) -> Result<()> {
    let mut k = Kwargs::new("D", &d.init_kwargs);
    let c_dim = k.int("c_dim", Some(0))?;
    let resolution = k.int("img_resolution", None)?;
    let channels = k.int("img_channels", None)?;
    let base = k.int("channel_base", Some(32768))?;
    let max = k.int("channel_max", Some(512))?;
    k.int("num_fp16_res", Some(0))?;
    k.opt_float("conv_clamp")?;
    k.require(
        "architecture",
        &Value::Str("resnet".into()),
        "gantry's D is config F's residual D",
    )?;
    k.require(
        "cmap_dim",
        &Value::None,
        "gantry's cmap_dim is the 4x4 width",
    )?;
    let mut b = k.nested("block_kwargs")?;
    b.require(
        "activation",
        &Value::Str("lrelu".into()),
        "gantry's D uses lrelu",
    )?;
    b.ignore("fp16_channels_last");
    b.finish()?;
    let m = k.nested("mapping_kwargs")?;
    m.finish()?;
    let mut e = k.nested("epilogue_kwargs")?;
    let group = e.int("mbstd_group_size", Some(4))?;
    let mbstd_channels = e.int("mbstd_num_channels", Some(1))?;
    e.finish()?;
    k.finish()?;
    let (cfg, shape) = (&t.cfg, &t.shape);
    let g_c_dim = shape.num_classes.unwrap_or(0);
    if (c_dim, resolution, channels, base, max)
        != (
            g_c_dim,
            shape.resolution,
            shape.channels,
            cfg.channel_base,
            cfg.channel_max,
        )
    {
        return Err(Error::config(
            "D",
            format!(
                "(c_dim, img_resolution, img_channels, channel_base, channel_max) = ({c_dim}, \
                 {resolution}, {channels}, {base}, {max}) differ from G's ({g_c_dim}, {}, {}, {}, {}); \
                 gantry's G and D share those settings",
                shape.resolution, shape.channels, cfg.channel_base, cfg.channel_max
            ),
        ));
    }
    t.cfg.mbstd_group = group;
    t.cfg.mbstd_channels = mbstd_channels;
    Ok(())
}

/// The reference's state dict in gantry's names: filters checked and dropped.
fn to_gantry(m: &PickledModule, what: &str, generator: bool) -> Result<Tensors> {
    let filter = ops::setup_filter(&ops::BLUR_TAPS, Device::Cpu);
    let mut out = Tensors::new();
    for (name, t) in &m.state {
        if name == "resample_filter" || name.ends_with(".resample_filter") {
            let same = t.size() == filter.size()
                && t.to_kind(Kind::Float).allclose(&filter, 1e-6, 1e-7, false);
            if !same {
                return Err(Error::config(
                    format!("{what}.{name}"),
                    "is not the [1,3,3,1] filter gantry uses",
                ));
            }
            continue;
        }
        out.insert(name.clone(), t.to_kind(Kind::Float));
    }
    if generator {
        out.entry("pl_mean".into())
            .or_insert_with(|| Tensor::zeros([], (Kind::Float, Device::Cpu)));
    }
    Ok(out)
}

/// Checks the constructor arguments against the tensors they must have made, so that a pickle
/// cannot make gantry build networks larger than the file (and a mismatch is named, not a
/// failed copy).
fn check_shapes(
    t: &Translated,
    g: &PickledModule,
    d: Option<&PickledModule>,
    path: &Path,
) -> Result<()> {
    let (cfg, shape) = (&t.cfg, &t.shape);
    let c_dim = shape.num_classes.unwrap_or(0);
    let want = |m: &PickledModule, what: &str, key: &str, expected: Vec<i64>| -> Result<()> {
        let found = m.state.get(key).map(Tensor::size);
        if found.as_ref() != Some(&expected) {
            return Err(Error::input(
                path,
                format!(
                    "{what}.{key} is {}, but the constructor arguments make {expected:?}",
                    found.map_or("missing".into(), |f| format!("{f:?}"))
                ),
            ));
        }
        Ok(())
    };
    let embed = if c_dim > 0 { cfg.w_dim } else { 0 };
    want(
        g,
        "G",
        "mapping.fc0.weight",
        vec![cfg.w_dim, cfg.z_dim + embed],
    )?;
    if cfg.mapping_layers > 1 {
        let last = format!("mapping.fc{}.weight", cfg.mapping_layers - 1);
        want(g, "G", &last, vec![cfg.w_dim, cfg.w_dim])?;
    }
    if g.state
        .contains_key(&format!("mapping.fc{}.weight", cfg.mapping_layers))
    {
        return Err(Error::input(
            path,
            format!(
                "G has more mapping layers than num_layers = {}",
                cfg.mapping_layers
            ),
        ));
    }
    if c_dim > 0 {
        want(g, "G", "mapping.embed.weight", vec![cfg.w_dim, c_dim])?;
    }
    let ch = |res: i64| crate::models::stylegan2::channels(cfg, res);
    want(g, "G", "synthesis.b4.const", vec![ch(4), 4, 4])?;
    let r = shape.resolution;
    want(
        g,
        "G",
        &format!("synthesis.b{r}.torgb.weight"),
        vec![shape.channels, ch(r), 1, 1],
    )?;
    if let Some(d) = d {
        want(
            d,
            "D",
            "b4.conv.weight",
            vec![ch(4), ch(4) + cfg.mbstd_channels, 3, 3],
        )?;
    }
    Ok(())
}

pub(super) fn import(
    path: &Path,
    g: Option<&PickledModule>,
    g_ema: Option<&PickledModule>,
    d: Option<&PickledModule>,
) -> Result<Imported> {
    let at = |e: Error| match e {
        Error::Config { key, msg } => Error::input(path, format!("{key} {msg}")),
        other => other,
    };
    let mut notes = Vec::new();
    let main = g_ema.or(g).expect("the caller found G or G_ema");
    let (cfg, shape) = generator_config(main, &mut notes).map_err(at)?;
    if let (Some(g), Some(e)) = (g, g_ema) {
        let mut ignore = Vec::new();
        if generator_config(g, &mut ignore).map_err(at)? != (cfg.clone(), shape) {
            return Err(Error::input(
                path,
                "G and G_ema are built with different arguments",
            ));
        }
        let _ = e;
    }
    let mut t = Translated { cfg, shape, notes };
    if let Some(d) = d {
        discriminator_config(d, &mut t).map_err(at)?;
    }
    check_shapes(&t, main, d, path)?;
    let mut stores = Vec::new();
    if let Some(g) = g {
        stores.push(("g", to_gantry(g, "G", true).map_err(at)?));
    }
    if let Some(e) = g_ema {
        stores.push(("g_ema", to_gantry(e, "G_ema", true).map_err(at)?));
    }
    if let Some(d) = d {
        stores.push(("d", to_gantry(d, "D", false).map_err(at)?));
    }
    Ok(Imported {
        model: ModelConfig::StyleGan2(t.cfg),
        shape: t.shape,
        stores,
        origin: "a stylegan2-ada-pytorch network pickle".into(),
        notes: t.notes,
    })
}

/// Where the reference keeps a persistent `resample_filter` for a gantry weight `key`: the layer
/// itself (every Conv2dLayer and SynthesisLayer) and, once per block, the block.
fn filter_names(key: &str, generator: bool) -> Vec<String> {
    let Some(layer) = key.strip_suffix(".weight") else {
        return Vec::new();
    };
    let parts: Vec<&str> = layer.split('.').collect();
    let block = |b: &str| b.strip_prefix('b').and_then(|r| r.parse::<i64>().ok());
    match (generator, parts.as_slice()) {
        (true, ["synthesis", b, l]) if block(b).is_some() && (*l == "conv0" || *l == "conv1") => {
            let mut v = vec![format!("{layer}.resample_filter")];
            if *l == "conv1" {
                v.push(format!("synthesis.{b}.resample_filter"));
            }
            v
        }
        (false, [b, l]) if block(b).is_some_and(|r| r > 4) => {
            let mut v = vec![format!("{layer}.resample_filter")];
            if *l == "conv1" {
                v.push(format!("{b}.resample_filter"));
            }
            v
        }
        (false, ["b4", "conv"]) => vec![format!("{layer}.resample_filter")],
        _ => Vec::new(),
    }
}

/// gantry's tensors in the reference's state-dict form: `pl_mean` left out, filters added.
fn to_reference(t: &Tensors, generator: bool) -> Vec<(String, Tensor)> {
    let filter = ops::setup_filter(&ops::BLUR_TAPS, Device::Cpu);
    let mut out: Vec<(String, Tensor)> = Vec::new();
    for (k, v) in t {
        if generator && k == "pl_mean" {
            continue;
        }
        for f in filter_names(k, generator) {
            out.push((f, filter.shallow_clone()));
        }
        out.push((k.clone(), v.shallow_clone()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// stylegan2-ada-pytorch's `training.networks.Generator` / `Discriminator` state dicts and
/// constructor arguments (fp32 everywhere: `num_fp16_res = 0`, no `conv_clamp`).
pub fn export(
    cfg: &StyleGan2Config,
    shape: &DataShape,
    stores: &[(&str, Tensors)],
) -> Result<super::Export> {
    let c_dim = if cfg.conditional {
        shape.num_classes.unwrap_or(0)
    } else {
        0
    };
    let nets = stores
        .iter()
        .map(|(store, t)| {
            let generator = *store != "d";
            super::ExportedNet {
                name: match *store {
                    "g" => "G",
                    "g_ema" => "G_ema",
                    _ => "D",
                }
                .into(),
                tensors: to_reference(t, generator),
            }
        })
        .collect();
    let kwargs = serde_json::json!({
        "format": "stylegan2-ada-pytorch",
        "G": {
            "class_name": "training.networks.Generator",
            "kwargs": {
                "z_dim": cfg.z_dim,
                "c_dim": c_dim,
                "w_dim": cfg.w_dim,
                "img_resolution": shape.resolution,
                "img_channels": shape.channels,
                "mapping_kwargs": {"num_layers": cfg.mapping_layers, "lr_multiplier": cfg.mapping_lr_mul},
                "synthesis_kwargs": {
                    "channel_base": cfg.channel_base,
                    "channel_max": cfg.channel_max,
                    "num_fp16_res": 0,
                    "conv_clamp": null,
                },
            },
        },
        "D": {
            "class_name": "training.networks.Discriminator",
            "kwargs": {
                "c_dim": c_dim,
                "img_resolution": shape.resolution,
                "img_channels": shape.channels,
                "channel_base": cfg.channel_base,
                "channel_max": cfg.channel_max,
                "num_fp16_res": 0,
                "conv_clamp": null,
                "epilogue_kwargs": {
                    "mbstd_group_size": cfg.mbstd_group,
                    "mbstd_num_channels": cfg.mbstd_channels,
                },
            },
        },
    });
    Ok(super::Export { nets, kwargs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_go_where_the_reference_registers_them() {
        assert_eq!(
            filter_names("synthesis.b8.conv1.weight", true),
            [
                "synthesis.b8.conv1.resample_filter",
                "synthesis.b8.resample_filter"
            ]
        );
        assert_eq!(
            filter_names("synthesis.b8.conv0.weight", true),
            ["synthesis.b8.conv0.resample_filter"]
        );
        assert!(filter_names("synthesis.b8.torgb.weight", true).is_empty());
        assert!(filter_names("mapping.fc0.weight", true).is_empty());
        assert_eq!(
            filter_names("b16.skip.weight", false),
            ["b16.skip.resample_filter"]
        );
        assert_eq!(
            filter_names("b4.conv.weight", false),
            ["b4.conv.resample_filter"]
        );
        assert!(filter_names("b4.fc.weight", false).is_empty());
        assert!(filter_names("b16.conv1.bias", false).is_empty());
    }
}
