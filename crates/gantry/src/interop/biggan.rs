//! BigGAN-PyTorch (ajbrock) and the FQ-GAN authors' FQ-BigGAN state dicts (`G.pth`,
//! `G_ema.pth`, `D.pth`) <-> gantry's `biggan`, at BigGAN-PyTorch's `G_arch[32]` / `D_arch[32]`
//! (every block `4 * G_ch` wide, the shape gantry's biggan has).
//!
//! The files hold no constructor arguments, so the settings are read off the shapes: `G_ch`
//! from `linear`, `n_classes` and `shared_dim` from `shared` (or the per-class BN tables
//! without `G_shared`), `hier` and the z chunk from the BN gain's input width, attention from
//! `blocks.{i}.1.gamma`.
//!
//! Names: `linear` -> `b4.fc`; `blocks.{i}.0` -> `b{8<<i}` (G) or `b32, b16, b8a, b8b` (D) with
//! `conv1, conv2, conv_sc, bn1, bn2` -> `conv0, conv1, skip, bn0, bn1`; ccbn `stored_mean/var` ->
//! `running_mean/var`; `blocks.{i}.1` (attention) -> `attn{8<<i}`; `output_layer.0` (gain, bias,
//! stored stats) -> `out.bn`; `output_layer.2` -> `out.conv`; D's `linear` -> `out`.
//!
//! Spectral norm: BigGAN-PyTorch keeps the raw `weight` and `u0` (`[1, rows]`) and runs one power
//! step from `u0` in eval and training alike: `v1 = normalize(u0 W)`, `sigma = |W v1|`. gantry
//! stores `weight_u` and `weight_v` and computes `sigma = u . W v` in eval, after a power step in
//! training. `weight_u = u0` and `weight_v = v1 |W v1| / |W^T u0|` make both modes agree with the
//! reference exactly (`weight_v` is then not a unit vector; nothing assumes it is). `sv0` (a
//! logged value) is dropped; export writes `sigma` there.
//!
//! Departures: FQ-BigGAN's dictionaries (`blocks.{i}.1.embed`, ...) are not imported (a fine-tuned
//! run's FQ starts fresh; they never change D's output, as FQ-BigGAN's D discards the quantised
//! features); gantry's single `attention` setting also puts attention in D, so an imported D
//! whose G has attention gets an identity attention layer (`gamma = 0`) there. Other layouts
//! (resolution above 32, attention in D, several attention layers, `mybn`) are refused by name.

use super::{dims_in, Export, ExportedNet, Imported, Tensors};
use crate::error::{Error, Result};
use crate::models::biggan::BigGanConfig;
use crate::models::{DataShape, ModelConfig};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// BigGAN-PyTorch's `SN_eps` default (train.py).
const SN_EPS: f64 = 1e-8;

/// Whether a state dict is a BigGAN-PyTorch generator or discriminator.
pub(super) fn recognises(sd: &Tensors) -> bool {
    sd.contains_key("linear.weight") && sd.contains_key("blocks.0.0.conv1.weight")
}

fn is_discriminator(sd: &Tensors) -> bool {
    sd.contains_key("embed.weight")
}

fn normalize(x: &Tensor) -> Tensor {
    x / x.norm().clamp_min(SN_EPS)
}

/// `(weight_u, weight_v)` reproducing BigGAN-PyTorch's sigma from its `u0` (see the module doc);
/// `None` when the shapes do not fit (`u0` must have one entry per row of `W`).
fn sn_vectors(w: &Tensor, u0: &Tensor) -> Option<(Tensor, Tensor)> {
    let rows = *w.size().first()?;
    if w.dim() < 2 || rows <= 0 || u0.numel() as i64 != rows || w.numel() == 0 {
        return None;
    }
    let wm = w.reshape([rows, -1]).to_kind(Kind::Double);
    let u0 = u0.reshape([1, -1]).to_kind(Kind::Double);
    let wtu = u0.matmul(&wm);
    let v1 = normalize(&wtu);
    let sigma = v1.matmul(&wm.tr()).norm();
    let v = &v1 * sigma / wtu.norm().clamp_min(SN_EPS);
    Some((
        u0.reshape([-1]).to_kind(Kind::Float),
        v.reshape([-1]).to_kind(Kind::Float),
    ))
}

struct Mapper<'a> {
    sd: &'a Tensors,
    file: &'a Path,
    out: Tensors,
}

impl Mapper<'_> {
    fn get(&self, key: &str) -> Result<&Tensor> {
        self.sd.get(key).ok_or_else(|| {
            Error::input(
                self.file,
                format!("has no {key} (not a BigGAN-PyTorch G_arch[32]/D_arch[32] state dict?)"),
            )
        })
    }

    fn copy(&mut self, to: &str, from: &str) -> Result<()> {
        let t = self.get(from)?.to_kind(Kind::Float);
        self.out.insert(to.into(), t);
        Ok(())
    }

    /// A (possibly spectrally normalised) layer: weight, SN vectors, bias.
    fn layer(&mut self, to: &str, from: &str) -> Result<()> {
        self.copy(&format!("{to}.weight"), &format!("{from}.weight"))?;
        if let Some(u0) = self.sd.get(&format!("{from}.u0")) {
            let (u, v) = sn_vectors(self.get(&format!("{from}.weight"))?, u0).ok_or_else(|| {
                Error::input(self.file, format!("{from}.u0 does not fit {from}.weight"))
            })?;
            self.out.insert(format!("{to}.weight_u"), u);
            self.out.insert(format!("{to}.weight_v"), v);
        }
        if self.sd.contains_key(&format!("{from}.bias")) {
            self.copy(&format!("{to}.bias"), &format!("{from}.bias"))?;
        }
        Ok(())
    }

    fn attention(&mut self, to: &str, from: &str) -> Result<()> {
        for n in ["theta", "phi", "g", "o"] {
            self.layer(&format!("{to}.{n}"), &format!("{from}.{n}"))?;
        }
        let gamma = self.get(&format!("{from}.gamma"))?;
        if gamma.numel() != 1 {
            return Err(Error::input(
                self.file,
                format!("{from}.gamma is not a scalar"),
            ));
        }
        let gamma = gamma.to_kind(Kind::Float).reshape([]);
        self.out.insert(format!("{to}.gamma"), gamma);
        Ok(())
    }
}

/// Number of G blocks (`blocks.{i}.0`).
fn blocks(sd: &Tensors) -> usize {
    (0..)
        .take_while(|i| sd.contains_key(&format!("blocks.{i}.0.conv1.weight")))
        .count()
}

/// The settings a generator state dict was built with, read off its shapes.
fn generator_config(sd: &Tensors, file: &Path) -> Result<(BigGanConfig, i64)> {
    let bad = |msg: String| Error::input(file, msg);
    let n = blocks(sd);
    if n != 3 {
        return Err(bad(format!(
            "has {n} generator blocks; gantry's biggan is BigGAN-PyTorch's G_arch[32] (3 blocks, 32x32)"
        )));
    }
    let lin = dims_in(sd, "linear.weight", 2, file)?;
    let ngf = lin[0] / 16;
    let conv = dims_in(sd, "blocks.0.0.conv1.weight", 4, file)?;
    if lin[0] != 16 * ngf || conv[0] != ngf || conv[1] != ngf {
        return Err(bad(format!(
            "linear is {lin:?} and blocks.0.0.conv1 {conv:?}: not G_arch[32] (one width in every block)"
        )));
    }
    let gain = dims_in(sd, "blocks.0.0.bn1.gain.weight", 2, file)?;
    let shared = match sd.contains_key("shared.weight") {
        true => Some(dims_in(sd, "shared.weight", 2, file)?),
        false => None,
    };
    let (num_classes, shared_dim, hier, z_dim) = match &shared {
        Some(s) => {
            let (classes, dim) = (s[0], s[1]);
            // ccbn maps [shared_dim + z chunk] (hier) or [shared_dim] to the gain.
            let chunk = gain[1] - dim;
            let hier = chunk > 0;
            let z_dim = if hier {
                lin[1] * (n as i64 + 1)
            } else {
                lin[1]
            };
            if hier && chunk != lin[1] {
                return Err(bad(format!(
                    "the z chunks of linear ({}) and of the blocks ({chunk}) differ",
                    lin[1]
                )));
            }
            (classes, dim, hier, z_dim)
        }
        None => (gain[0], 0, false, lin[1]),
    };
    let attention = (0..n)
        .find(|i| sd.contains_key(&format!("blocks.{i}.1.gamma")))
        .map_or(0, |i| 8 << i);
    if (0..n)
        .filter(|i| sd.contains_key(&format!("blocks.{i}.1.gamma")))
        .count()
        > 1
    {
        return Err(bad(
            "has attention after several blocks; gantry's biggan has one attention layer".into(),
        ));
    }
    if sd
        .keys()
        .any(|k| k.contains(".bn.") || k.contains("accumulation_counter"))
    {
        return Err(bad(
            "uses mybn / cross-replica BatchNorm, which gantry does not map".into(),
        ));
    }
    let cfg = BigGanConfig {
        z_dim,
        ngf,
        g_sn: sd.contains_key("linear.u0"),
        attention,
        shared_embedding: shared.is_some(),
        shared_dim,
        hier,
        ..Default::default()
    };
    Ok((cfg, num_classes))
}

fn map_generator(sd: &Tensors, file: &Path) -> Result<Tensors> {
    let mut m = Mapper {
        sd,
        file,
        out: Tensors::new(),
    };
    if sd.contains_key("shared.weight") {
        m.copy("shared.weight", "shared.weight")?;
    }
    m.layer("b4.fc", "linear")?;
    for i in 0..blocks(sd) {
        let (src, dst) = (format!("blocks.{i}.0"), format!("b{}", 8 << i));
        for (a, b) in [("conv1", "conv0"), ("conv2", "conv1"), ("conv_sc", "skip")] {
            m.layer(&format!("{dst}.{b}"), &format!("{src}.{a}"))?;
        }
        for (a, b) in [("bn1", "bn0"), ("bn2", "bn1")] {
            for p in ["gain", "bias"] {
                m.layer(&format!("{dst}.{b}.{p}"), &format!("{src}.{a}.{p}"))?;
            }
            m.copy(
                &format!("{dst}.{b}.running_mean"),
                &format!("{src}.{a}.stored_mean"),
            )?;
            m.copy(
                &format!("{dst}.{b}.running_var"),
                &format!("{src}.{a}.stored_var"),
            )?;
        }
        if sd.contains_key(&format!("blocks.{i}.1.gamma")) {
            m.attention(&format!("attn{}", 8 << i), &format!("blocks.{i}.1"))?;
        }
    }
    m.copy("out.bn.weight", "output_layer.0.gain")?;
    m.copy("out.bn.bias", "output_layer.0.bias")?;
    m.copy("out.bn.running_mean", "output_layer.0.stored_mean")?;
    m.copy("out.bn.running_var", "output_layer.0.stored_var")?;
    m.layer("out.conv", "output_layer.2")?;
    Ok(m.out)
}

const D_TAPS: [&str; 4] = ["b32", "b16", "b8a", "b8b"];

fn map_discriminator(sd: &Tensors, file: &Path, cfg: &BigGanConfig) -> Result<Tensors> {
    let mut m = Mapper {
        sd,
        file,
        out: Tensors::new(),
    };
    for (i, tap) in D_TAPS.iter().enumerate() {
        let src = format!("blocks.{i}.0");
        for (a, b) in [("conv1", "conv0"), ("conv2", "conv1"), ("conv_sc", "skip")] {
            if sd.contains_key(&format!("{src}.{a}.weight")) {
                m.layer(&format!("{tap}.{b}"), &format!("{src}.{a}"))?;
            }
        }
        if sd
            .keys()
            .any(|k| k.starts_with(&format!("blocks.{i}.")) && k.ends_with(".gamma"))
        {
            return Err(Error::input(
                file,
                "has attention in D (D_attn); gantry's biggan has attention only after the block G has it after",
            ));
        }
    }
    m.layer("out", "linear")?;
    m.layer("embed", "embed")?;
    if cfg.attention > 0 {
        // gantry's D has attention where G has it; the reference's has none: an exact identity
        // (gamma = 0), its 1x1 convolutions small and fixed so that sigma is finite.
        let a = cfg.attention;
        let c = cfg.ndf;
        // Deterministic, not drawn: importing must not touch the global generator.
        let fixed = |offset: f64, shape: &[i64]| {
            let n: i64 = shape.iter().product();
            (Tensor::arange(n, (Kind::Float, Device::Cpu)) + offset)
                .sin()
                .reshape(shape)
        };
        for (n, co, ci) in [
            ("theta", c / 8, c),
            ("phi", c / 8, c),
            ("g", c / 2, c),
            ("o", c, c / 2),
        ] {
            m.out.insert(
                format!("attn{a}.{n}.weight"),
                fixed(0.0, &[co, ci, 1, 1]) * 0.02,
            );
            m.out.insert(
                format!("attn{a}.{n}.weight_u"),
                normalize(&fixed(1.0, &[co])),
            );
            m.out.insert(
                format!("attn{a}.{n}.weight_v"),
                normalize(&fixed(2.0, &[ci])),
            );
        }
        m.out.insert(
            format!("attn{a}.gamma"),
            Tensor::zeros([], (Kind::Float, Device::Cpu)),
        );
    }
    Ok(m.out)
}

/// A folder of `G.pth` / `G_ema.pth` / `D.pth`, or one of those files.
pub(super) fn import(files: &[(String, Tensors, std::path::PathBuf)]) -> Result<Imported> {
    let gens: Vec<&(String, Tensors, std::path::PathBuf)> = files
        .iter()
        .filter(|(_, sd, _)| !is_discriminator(sd))
        .collect();
    let Some(first) = gens.first() else {
        let file = files.first().map(|f| f.2.clone()).unwrap_or_default();
        return Err(Error::input(
            file,
            "is a BigGAN-PyTorch discriminator; pass the generator (G.pth, G_ema.pth) or the folder holding them",
        ));
    };
    let (mut cfg, num_classes) = generator_config(&first.1, &first.2)?;
    let mut stores = Vec::new();
    let mut notes = Vec::new();
    for (store, sd, file) in files {
        if is_discriminator(sd) {
            continue;
        }
        let (c, n) = generator_config(sd, file)?;
        if (c.clone(), n) != (cfg.clone(), num_classes) {
            return Err(Error::input(
                file,
                "is built with other settings than the other generator file",
            ));
        }
        stores.push((
            if store == "g_ema" { "g_ema" } else { "g" },
            map_generator(sd, file)?,
        ));
    }
    for (_, sd, file) in files {
        if !is_discriminator(sd) {
            continue;
        }
        let ndf = dims_in(sd, "blocks.0.0.conv1.weight", 4, file)?[0];
        cfg.ndf = ndf;
        cfg.d_sn = sd.contains_key("linear.u0");
        if sd.keys().any(|k| k.ends_with(".cluster_size")) {
            notes.push(format!(
                "{} holds FQ-BigGAN dictionaries; they are not imported (FQ starts fresh when fine-tuning)",
                file.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned())
            ));
        }
        stores.push(("d", map_discriminator(sd, file, &cfg)?));
    }
    Ok(Imported {
        model: ModelConfig::BigGan(cfg),
        shape: DataShape::image(3, 32, Some(num_classes)),
        stores,
        origin: "BigGAN-PyTorch weights".into(),
        notes,
    })
}

/// gantry's tensors under BigGAN-PyTorch's names: the inverse of the import's renames, with
/// `u0 = weight_u` and `sv0` = the layer's current sigma.
fn to_reference(t: &Tensors, renames: &[(String, String)]) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    for (to, from) in renames {
        // `to`/`from` name layers (or plain tensors when `from` is a full key).
        if let Some(v) = t.get(from) {
            out.push((to.clone(), v.shallow_clone()));
            continue;
        }
        let w = &t[&format!("{from}.weight")];
        out.push((format!("{to}.weight"), w.shallow_clone()));
        if let Some(b) = t.get(&format!("{from}.bias")) {
            out.push((format!("{to}.bias"), b.shallow_clone()));
        }
        if let (Some(u), Some(v)) = (
            t.get(&format!("{from}.weight_u")),
            t.get(&format!("{from}.weight_v")),
        ) {
            let wm = w.reshape([w.size()[0], -1]);
            let sigma = u.dot(&wm.mv(v)).reshape([1]);
            out.push((format!("{to}.u0"), u.reshape([1, -1])));
            out.push((format!("{to}.sv0"), sigma));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn generator_renames(cfg: &BigGanConfig) -> Vec<(String, String)> {
    let mut r: Vec<(String, String)> = Vec::new();
    let mut add = |to: String, from: String| r.push((to, from));
    if cfg.shared_embedding {
        add("shared.weight".into(), "shared.weight".into());
    }
    add("linear".into(), "b4.fc".into());
    for i in 0..3 {
        let (dst, src) = (format!("blocks.{i}.0"), format!("b{}", 8 << i));
        for (a, b) in [("conv1", "conv0"), ("conv2", "conv1"), ("conv_sc", "skip")] {
            add(format!("{dst}.{a}"), format!("{src}.{b}"));
        }
        for (a, b) in [("bn1", "bn0"), ("bn2", "bn1")] {
            for p in ["gain", "bias"] {
                add(format!("{dst}.{a}.{p}"), format!("{src}.{b}.{p}"));
            }
            add(
                format!("{dst}.{a}.stored_mean"),
                format!("{src}.{b}.running_mean"),
            );
            add(
                format!("{dst}.{a}.stored_var"),
                format!("{src}.{b}.running_var"),
            );
        }
        if cfg.attention == 8 << i {
            for n in ["theta", "phi", "g", "o"] {
                add(format!("blocks.{i}.1.{n}"), format!("attn{}.{n}", 8 << i));
            }
            add(
                format!("blocks.{i}.1.gamma"),
                format!("attn{}.gamma", 8 << i),
            );
        }
    }
    add("output_layer.0.gain".into(), "out.bn.weight".into());
    add("output_layer.0.bias".into(), "out.bn.bias".into());
    add(
        "output_layer.0.stored_mean".into(),
        "out.bn.running_mean".into(),
    );
    add(
        "output_layer.0.stored_var".into(),
        "out.bn.running_var".into(),
    );
    add("output_layer.2".into(), "out.conv".into());
    r
}

fn discriminator_renames() -> Vec<(String, String)> {
    let mut r = Vec::new();
    for (i, tap) in D_TAPS.iter().enumerate() {
        for (a, b) in [("conv1", "conv0"), ("conv2", "conv1")] {
            r.push((format!("blocks.{i}.0.{a}"), format!("{tap}.{b}")));
        }
        if i < 2 {
            r.push((format!("blocks.{i}.0.conv_sc"), format!("{tap}.skip")));
        }
    }
    r.push(("linear".into(), "out".into()));
    r.push(("embed".into(), "embed".into()));
    r
}

/// BigGAN-PyTorch `BigGAN.Generator` / `Discriminator` state dicts and train.py-style arguments.
pub fn export(cfg: &BigGanConfig, shape: &DataShape, stores: &[(&str, Tensors)]) -> Result<Export> {
    let refuse = |msg: String| Err(Error::config("--format", msg));
    if shape.resolution != 32 {
        return refuse(format!(
            "BigGAN-PyTorch's G_arch[{0}] varies the width per block; only a 32x32 gantry biggan has its shape",
            shape.resolution
        ));
    }
    if cfg.ngf % 4 != 0 || cfg.ndf % 4 != 0 {
        return refuse(format!(
            "model.ngf/ndf ({}, {}) must be multiples of 4 (4 x G_ch)",
            cfg.ngf, cfg.ndf
        ));
    }
    if cfg.pool != crate::models::resnet::Pool::Sum {
        return refuse(
            "BigGAN-PyTorch's D sums over space; model.pool = mean has no counterpart".into(),
        );
    }
    let mut nets = Vec::new();
    for (store, t) in stores {
        let name = match *store {
            "g" => "G",
            "g_ema" => "G_ema",
            _ if cfg.attention > 0 => continue, // not representable: see the report
            _ => "D",
        };
        let renames = if *store == "d" {
            discriminator_renames()
        } else {
            generator_renames(cfg)
        };
        nets.push(ExportedNet {
            name: name.into(),
            tensors: to_reference(t, &renames),
        });
    }
    let z_dim = cfg.z_dim;
    let kwargs = serde_json::json!({
        "format": "BigGAN-PyTorch",
        "note": if cfg.attention > 0 { "D is not exported: gantry's D has attention after a block, which BigGAN-PyTorch's D_arch[32] cannot place" } else { "" },
        "G": {
            "class_name": "BigGAN.Generator",
            "kwargs": {
                "resolution": 32, "G_ch": cfg.ngf / 4, "dim_z": z_dim,
                "n_classes": shape.num_classes.unwrap_or(0),
                "G_shared": cfg.shared_embedding,
                "shared_dim": if cfg.shared_dim == 0 { z_dim } else { cfg.shared_dim },
                "hier": cfg.hier,
                "G_attn": if cfg.attention > 0 { cfg.attention.to_string() } else { "0".into() },
                "G_param": if cfg.g_sn { "SN" } else { "none" },
                "BN_eps": 1e-5, "SN_eps": 1e-12, "skip_init": true,
            },
        },
        "D": {
            "class_name": "BigGAN.Discriminator",
            "kwargs": {
                "resolution": 32, "D_ch": cfg.ndf / 4, "n_classes": shape.num_classes.unwrap_or(0),
                "D_attn": "0", "D_param": "SN", "D_wide": true, "SN_eps": 1e-12, "skip_init": true,
            },
        },
    });
    Ok(Export { nets, kwargs })
}
