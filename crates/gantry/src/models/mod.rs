//! Generators and discriminators. Every discriminator is split as `D(x) = head(embed(x))` so that
//! plug-ins (AdaptiveMix, FQ) can wrap any architecture through that seam, and it names the feature
//! maps that `embed` passes through (`taps`), so FQ can be placed after any of them.
//!
//! A new architecture is one file here (its settings type implements [`Architecture`]) plus one
//! variant of [`ModelConfig`]. `docs/models.md` summarises each and where it departs from its
//! reference.

pub mod biggan;
pub mod dcgan;
pub mod mlp;
pub mod r3gan;
pub mod resnet;
pub mod stylegan2;

use crate::error::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// Called at every named feature tap inside `embed`; returns the tensor that continues through D
/// (the input itself, or a replacement such as FQ's straight-through quantised features).
pub type TapFn<'a> = dyn FnMut(&str, Tensor) -> Tensor + 'a;

pub trait Generator: Send {
    /// Length of the latent vector z.
    fn z_dim(&self) -> i64;
    /// Maps latents `[B, z_dim]` (and labels, for conditional models) to samples `[B, C, H, W]`.
    fn forward(&self, z: &Tensor, labels: Option<&Tensor>, train: bool) -> Tensor;
    /// Inference with `gantry sample`'s controls: the truncation trick with `psi` (1 = none) and
    /// the noise of generators that have noise inputs. By default `psi` pulls z towards its mean,
    /// 0 (BigGAN's truncation, without resampling), and there is no noise to choose.
    fn generate(
        &self,
        z: &Tensor,
        labels: Option<&Tensor>,
        psi: f64,
        _noise: stylegan2::layers::NoiseMode,
    ) -> Tensor {
        self.forward(&(z * psi), labels, false)
    }
    /// The StyleGAN2 generator behind this one, for what needs its intermediate latents (style
    /// mixing); `None` for the others.
    fn as_stylegan2(&self) -> Option<&stylegan2::StyleGan2Generator> {
        None
    }
    /// Path-length regularisation (StyleGAN2, `loss.pl`): the penalty `E[(|J_w^T u| - a)^2]` for
    /// latents `z` (unweighted), updating the running mean `a` with `decay`. `None` (the default)
    /// for generators without an intermediate latent space, which then skip the pass.
    fn path_length_penalty(
        &self,
        _z: &Tensor,
        _labels: Option<&Tensor>,
        _decay: f64,
    ) -> Option<Tensor> {
        None
    }
}

pub trait Discriminator: Send {
    /// Features up to the deepest spatial map, calling `tap` at each named layer output. `embed`
    /// has no cross-sample operation other than BatchNorm (AdaptiveMix relies on that).
    fn embed_tapped(&self, x: &Tensor, train: bool, tap: &mut TapFn<'_>) -> Tensor;
    /// The rest of D: features to one score per sample, `[B]`.
    fn head(&self, features: &Tensor, labels: Option<&Tensor>, train: bool) -> Tensor;
    /// Names of the feature maps `embed` passes through, shallow to deep (the same as its
    /// settings' [`Architecture::taps`]).
    fn taps(&self) -> Vec<String>;

    fn embed(&self, x: &Tensor, train: bool) -> Tensor {
        self.embed_tapped(x, train, &mut |_, h| h)
    }
    fn forward(&self, x: &Tensor, labels: Option<&Tensor>, train: bool) -> Tensor {
        self.head(&self.embed(x, train), labels, train)
    }
}

/// Settings of one architecture: implemented by each architecture's settings type (`DcganConfig`
/// in `dcgan.rs`, ...), which is also what builds its networks.
pub trait Architecture {
    /// Checks of the settings that need nothing but the image resolution, so that they run
    /// before any data is opened (`RunConfig::validate`).
    fn validate(&self, resolution: i64) -> Result<()>;
    /// Checks that need the opened data (labels); none by default.
    fn validate_data(&self, _shape: &DataShape) -> Result<()> {
        Ok(())
    }
    /// D's named feature maps at this resolution, shallow to deep: where plug-ins attach.
    fn taps(&self, resolution: i64) -> Vec<String>;
    /// The taps FQ quantises when `fq.layers` is empty (the middle of D by default).
    fn default_fq_layers(&self, resolution: i64) -> Vec<String> {
        let taps = self.taps(resolution);
        vec![taps[(taps.len() - 1) / 2].clone()]
    }
    fn generator(&self, p: nn::Path, shape: &DataShape) -> Box<dyn Generator>;
    fn discriminator(&self, p: nn::Path, shape: &DataShape) -> Box<dyn Discriminator>;
    /// Whether the networks take 2-D points rather than images.
    fn takes_points(&self) -> bool {
        false
    }
    /// Whether G has an intermediate latent space, and so path-length regularisation (`loss.pl`).
    fn has_path_length(&self) -> bool {
        false
    }
    /// Whether G and D take class labels.
    fn conditional(&self) -> bool {
        false
    }
    /// Whether a conditional G's fakes take the classes of random training images (the data's
    /// class frequencies, as stylegan2-ada draws them) rather than uniform classes
    /// (BigGAN-PyTorch). A relativistic loss overrides both: it pairs each fake with a real.
    fn fake_classes_from_data(&self) -> bool {
        false
    }
    /// Whether D normalises with batch statistics (which a per-sample gradient penalty forbids).
    fn d_batch_norm(&self) -> bool {
        false
    }
    /// Whether every layer of D is spectrally normalised (a Lipschitz constraint of its own).
    fn d_spectral_norm(&self) -> bool {
        false
    }
}

/// `model.*`: `arch` selects the architecture, and the other keys are that architecture's own
/// settings, with its own defaults (a resolved configuration shows only those). Resolution and
/// channels come from the data.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "arch")]
pub enum ModelConfig {
    /// DCGAN (images, 8x8 and up).
    #[serde(rename = "dcgan")]
    Dcgan(dcgan::DcganConfig),
    /// MLP G and D for 2-D points.
    #[serde(rename = "mlp")]
    Mlp(mlp::MlpConfig),
    /// StyleGAN2 config F (images, 8x8 to 1024x1024).
    #[serde(rename = "stylegan2")]
    StyleGan2(stylegan2::StyleGan2Config),
    /// The WGAN-GP / SNGAN CIFAR ResNet.
    #[serde(rename = "resnet")]
    Resnet(resnet::ResnetConfig),
    /// Class-conditional BigGAN.
    #[serde(rename = "biggan")]
    BigGan(biggan::BigGanConfig),
    /// R3GAN's normalisation-free ResNeXt G and D.
    #[serde(rename = "r3gan")]
    R3gan(r3gan::R3ganConfig),
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::Dcgan(Default::default())
    }
}

impl ModelConfig {
    /// The values of `model.arch`.
    pub const ARCHS: &'static [&'static str] =
        &["dcgan", "mlp", "stylegan2", "resnet", "biggan", "r3gan"];

    pub fn arch(&self) -> &dyn Architecture {
        match self {
            ModelConfig::Dcgan(c) => c,
            ModelConfig::Mlp(c) => c,
            ModelConfig::StyleGan2(c) => c,
            ModelConfig::Resnet(c) => c,
            ModelConfig::BigGan(c) => c,
            ModelConfig::R3gan(c) => c,
        }
    }

    /// The value of `model.arch`.
    pub fn arch_name(&self) -> &'static str {
        match self {
            ModelConfig::Dcgan(_) => "dcgan",
            ModelConfig::Mlp(_) => "mlp",
            ModelConfig::StyleGan2(_) => "stylegan2",
            ModelConfig::Resnet(_) => "resnet",
            ModelConfig::BigGan(_) => "biggan",
            ModelConfig::R3gan(_) => "r3gan",
        }
    }

    /// The settings of `arch` from the other keys of the table. Errors name the key below
    /// `model` (`ngf: unknown field ...`), which `RunConfig` joins into `model.ngf`.
    fn parse(arch: &str, rest: toml::Table) -> std::result::Result<ModelConfig, String> {
        fn settings<T: serde::de::DeserializeOwned>(
            t: toml::Table,
        ) -> std::result::Result<T, String> {
            serde_path_to_error::deserialize(toml::Value::Table(t)).map_err(|e| {
                let key = e.path().to_string();
                let msg = e.into_inner().to_string();
                let msg = msg.lines().next().unwrap_or_default().trim().to_string();
                if key == "." {
                    msg
                } else {
                    format!("{key}: {msg}")
                }
            })
        }
        match arch {
            "dcgan" => settings(rest).map(ModelConfig::Dcgan),
            "mlp" => settings(rest).map(ModelConfig::Mlp),
            "stylegan2" => settings(rest).map(ModelConfig::StyleGan2),
            "resnet" => settings(rest).map(ModelConfig::Resnet),
            "biggan" => settings(rest).map(ModelConfig::BigGan),
            "r3gan" => settings(rest).map(ModelConfig::R3gan),
            other => Err(format!(
                "arch: unknown architecture {other:?} (valid: {})",
                Self::ARCHS.join(", ")
            )),
        }
    }
}

/// By hand rather than serde's internally tagged derive, which buffers the table and so loses
/// the path of an error inside it (`model` instead of `model.d_norm`).
impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = toml::Table::deserialize(d)?;
        let arch = match table.remove("arch") {
            Some(toml::Value::String(s)) => s,
            Some(_) => return Err(D::Error::custom("arch: expected a string")),
            None => {
                return Err(D::Error::custom(format!(
                    "arch: missing (valid: {})",
                    Self::ARCHS.join(", ")
                )))
            }
        };
        Self::parse(&arch, table).map_err(D::Error::custom)
    }
}

/// What a model needs to know about the data it is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataShape {
    pub channels: i64,
    pub resolution: i64,
    /// Flat sample size for non-image data (2-D points): `C*H*W`.
    pub numel: i64,
    pub num_classes: Option<i64>,
}

impl DataShape {
    /// Square images: `channels` x `resolution` x `resolution`.
    pub fn image(channels: i64, resolution: i64, num_classes: Option<i64>) -> Self {
        DataShape {
            channels,
            resolution,
            numel: channels * resolution * resolution,
            num_classes,
        }
    }
}

/// Builds a generator under `p` (the same call builds G and its EMA copy, so their keys match),
/// after checking the settings against the data.
pub fn build_generator(
    p: nn::Path,
    cfg: &ModelConfig,
    shape: &DataShape,
) -> Result<Box<dyn Generator>> {
    let arch = cfg.arch();
    arch.validate(shape.resolution)?;
    arch.validate_data(shape)?;
    Ok(arch.generator(p, shape))
}

pub fn build_discriminator(
    p: nn::Path,
    cfg: &ModelConfig,
    shape: &DataShape,
) -> Result<Box<dyn Discriminator>> {
    let arch = cfg.arch();
    arch.validate(shape.resolution)?;
    arch.validate_data(shape)?;
    Ok(arch.discriminator(p, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<ModelConfig, String> {
        toml::from_str::<ModelConfig>(text).map_err(|e| e.message().to_string())
    }

    #[test]
    fn arch_selects_the_settings_and_their_defaults() {
        let m = parse("arch = \"stylegan2\"\nchannel_base = 2048").unwrap();
        let ModelConfig::StyleGan2(s) = &m else {
            panic!("{m:?}")
        };
        assert_eq!((s.channel_base, s.mapping_layers), (2048, 8));
        let text = toml::to_string(&m).unwrap();
        assert!(text.starts_with("arch = \"stylegan2\""), "{text}");
        assert!(!text.contains("ngf"), "{text}");
        assert_eq!(toml::from_str::<ModelConfig>(&text).unwrap(), m);
        for arch in ModelConfig::ARCHS {
            let m = parse(&format!("arch = \"{arch}\"")).unwrap();
            assert_eq!(m.arch_name(), *arch);
        }
    }

    #[test]
    fn errors_name_the_key_below_model() {
        let e = parse("arch = \"dcgan\"\nchannel_base = 2").unwrap_err();
        assert!(e.starts_with("channel_base: unknown field"), "{e}");
        assert!(e.contains("ngf"), "{e}");
        let e = parse("arch = \"dcgan\"\nd_norm = \"group\"").unwrap_err();
        assert!(
            e.starts_with("d_norm: unknown variant") && e.contains("layer"),
            "{e}"
        );
        let e = parse("arch = \"dcgam\"").unwrap_err();
        assert!(
            e.starts_with("arch: unknown architecture") && e.contains("stylegan2"),
            "{e}"
        );
        assert!(parse("ngf = 3").unwrap_err().starts_with("arch: missing"));
    }

    /// One source for D's tap names: what the settings promise is what the network names.
    #[test]
    fn settings_and_networks_agree_on_taps() {
        let cases: Vec<(ModelConfig, DataShape)> = vec![
            (
                ModelConfig::Dcgan(dcgan::DcganConfig {
                    ngf: 4,
                    ndf: 4,
                    ..Default::default()
                }),
                DataShape::image(3, 32, None),
            ),
            (
                ModelConfig::Mlp(mlp::MlpConfig {
                    hidden: 4,
                    depth: 3,
                    ..Default::default()
                }),
                DataShape::image(2, 1, None),
            ),
            (
                ModelConfig::StyleGan2(stylegan2::StyleGan2Config {
                    z_dim: 8,
                    w_dim: 8,
                    channel_base: 64,
                    channel_max: 8,
                    mapping_layers: 1,
                    ..Default::default()
                }),
                DataShape::image(3, 16, None),
            ),
            (
                ModelConfig::Resnet(resnet::ResnetConfig {
                    ngf: 4,
                    ndf: 4,
                    ..Default::default()
                }),
                DataShape::image(3, 16, None),
            ),
            (
                ModelConfig::BigGan(biggan::BigGanConfig {
                    ngf: 8,
                    ndf: 8,
                    ..Default::default()
                }),
                DataShape::image(3, 32, Some(3)),
            ),
        ];
        for (cfg, shape) in cases {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let d = build_discriminator(vs.root(), &cfg, &shape).unwrap();
            let taps = cfg.arch().taps(shape.resolution);
            assert_eq!(d.taps(), taps, "{}", cfg.arch_name());
            for l in cfg.arch().default_fq_layers(shape.resolution) {
                assert!(taps.contains(&l), "{}: {l}", cfg.arch_name());
            }
        }
    }
}
