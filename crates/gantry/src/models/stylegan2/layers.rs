//! StyleGAN2's layers with equalised learning rate (Karras et al. 2018, sec. 4.1): weights are
//! stored as N(0, 1) / lr_multiplier and scaled at run time by `lr_multiplier / sqrt(fan_in)`, so
//! Adam's per-parameter step size acts on every layer alike; biases are scaled by the learning-rate
//! multiplier. Names (`weight`, `bias`, `affine`, `noise_const`, `noise_strength`) are those of
//! stylegan2-ada-pytorch's `training/networks.py`, so checkpoint keys read like its state dicts.

use super::ops::{self, Act, ModConvForm};
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// `FullyConnectedLayer`: an equalised linear layer with optional activation.
pub struct FullyConnected {
    weight: Tensor,
    bias: Tensor,
    weight_gain: f64,
    bias_gain: f64,
    act: Act,
}

impl FullyConnected {
    /// `lr_mul` scales both the effective learning rate and the run-time weight (0.01 in the
    /// mapping network, so it learns 100x slower than the synthesis network).
    pub fn new(
        p: nn::Path,
        in_features: i64,
        out_features: i64,
        act: Act,
        lr_mul: f64,
        bias_init: f64,
    ) -> Self {
        let weight = p.var(
            "weight",
            &[out_features, in_features],
            Init::Randn {
                mean: 0.0,
                stdev: 1.0 / lr_mul,
            },
        );
        let bias = p.var("bias", &[out_features], Init::Const(bias_init));
        FullyConnected {
            weight,
            bias,
            weight_gain: lr_mul / (in_features as f64).sqrt(),
            bias_gain: lr_mul,
            act,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let w = &self.weight * self.weight_gain;
        let b = &self.bias * self.bias_gain;
        match self.act {
            Act::Linear => b.unsqueeze(0).addmm(x, &w.tr()),
            act => ops::bias_act(&x.matmul(&w.tr()), Some(&b), act, act.default_gain()),
        }
    }
}

/// `Conv2dLayer`: an equalised convolution with optional 2x up/downsampling through the blur
/// filter, bias and activation (the discriminator's layers).
pub struct Conv2dLayer {
    weight: Tensor,
    bias: Option<Tensor>,
    weight_gain: f64,
    act: Act,
    up: i64,
    down: i64,
    padding: i64,
    filter: Tensor,
}

/// Shape and resampling of a [`Conv2dLayer`].
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub in_channels: i64,
    pub out_channels: i64,
    pub kernel: i64,
    pub bias: bool,
    pub act: Act,
    pub up: i64,
    pub down: i64,
}

impl ConvSpec {
    pub fn new(in_channels: i64, out_channels: i64, kernel: i64, act: Act) -> Self {
        ConvSpec {
            in_channels,
            out_channels,
            kernel,
            bias: true,
            act,
            up: 1,
            down: 1,
        }
    }
    pub fn down(self) -> Self {
        ConvSpec { down: 2, ..self }
    }
    pub fn no_bias(self) -> Self {
        ConvSpec {
            bias: false,
            ..self
        }
    }
}

impl Conv2dLayer {
    pub fn new(p: nn::Path, spec: ConvSpec, filter: &Tensor) -> Self {
        let k = spec.kernel;
        let weight = p.var(
            "weight",
            &[spec.out_channels, spec.in_channels, k, k],
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        );
        let bias = spec
            .bias
            .then(|| p.var("bias", &[spec.out_channels], Init::Const(0.0)));
        Conv2dLayer {
            weight,
            bias,
            weight_gain: 1.0 / ((spec.in_channels * k * k) as f64).sqrt(),
            act: spec.act,
            up: spec.up,
            down: spec.down,
            padding: k / 2,
            filter: filter.shallow_clone(),
        }
    }

    /// `gain` multiplies the output (sqrt(1/2) on both branches of a residual block keeps the
    /// sum's variance).
    pub fn forward(&self, x: &Tensor, gain: f64) -> Tensor {
        let w = &self.weight * self.weight_gain;
        let y = ops::conv2d_resample(
            x,
            &w,
            &self.filter,
            self.up,
            self.down,
            self.padding,
            1,
            self.up == 1,
        );
        let y = ops::bias_act(
            &y,
            self.bias.as_ref(),
            self.act,
            self.act.default_gain() * gain,
        );
        ops::fp16_clamp(y, gain)
    }
}

/// Where a synthesis layer's noise comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoiseMode {
    /// Fresh N(0, 1) noise per sample and call (training, and the reference's metrics).
    Random,
    /// The layer's fixed `noise_const` buffer (reproducible pictures).
    Const,
    /// No noise.
    None,
}

/// `SynthesisLayer`: a modulated, demodulated 3x3 convolution (optionally 2x upsampling), plus
/// per-pixel noise with a learned strength, bias and LeakyReLU.
pub struct SynthesisLayer {
    affine: FullyConnected,
    weight: Tensor,
    bias: Tensor,
    noise_const: Tensor,
    noise_strength: Tensor,
    resolution: i64,
    up: i64,
    filter: Tensor,
}

impl SynthesisLayer {
    pub fn new(
        p: nn::Path,
        in_channels: i64,
        out_channels: i64,
        w_dim: i64,
        resolution: i64,
        up: i64,
        filter: &Tensor,
    ) -> Self {
        // Styles start at 1 (bias_init = 1): the layer begins as a plain convolution.
        let affine = FullyConnected::new(&p / "affine", w_dim, in_channels, Act::Linear, 1.0, 1.0);
        let weight = p.var(
            "weight",
            &[out_channels, in_channels, 3, 3],
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        );
        let noise = Tensor::randn([resolution, resolution], (Kind::Float, p.device()));
        let noise_const = p.add("noise_const", noise, false);
        let noise_strength = p.var("noise_strength", &[], Init::Const(0.0));
        let bias = p.var("bias", &[out_channels], Init::Const(0.0));
        SynthesisLayer {
            affine,
            weight,
            bias,
            noise_const,
            noise_strength,
            resolution,
            up,
            filter: filter.shallow_clone(),
        }
    }

    pub fn forward(&self, x: &Tensor, w: &Tensor, noise: NoiseMode, form: ModConvForm) -> Tensor {
        let styles = self.affine.forward(w);
        let n = x.size()[0];
        let noise = match noise {
            NoiseMode::Random => {
                let r = self.resolution;
                Some(Tensor::randn([n, 1, r, r], (x.kind(), x.device())) * &self.noise_strength)
            }
            NoiseMode::Const => Some(&self.noise_const * &self.noise_strength),
            NoiseMode::None => None,
        };
        let y = ops::modulated_conv2d(
            x,
            &self.weight,
            &styles,
            noise.as_ref(),
            self.up,
            1,
            &self.filter,
            true,
            form,
        );
        let y = ops::bias_act(&y, Some(&self.bias), Act::Lrelu, Act::Lrelu.default_gain());
        ops::fp16_clamp(y, 1.0)
    }
}

/// `ToRGBLayer`: a modulated 1x1 convolution to image channels, without demodulation.
pub struct ToRgb {
    affine: FullyConnected,
    weight: Tensor,
    bias: Tensor,
    weight_gain: f64,
    filter: Tensor,
}

impl ToRgb {
    pub fn new(
        p: nn::Path,
        in_channels: i64,
        img_channels: i64,
        w_dim: i64,
        filter: &Tensor,
    ) -> Self {
        let affine = FullyConnected::new(&p / "affine", w_dim, in_channels, Act::Linear, 1.0, 1.0);
        let weight = p.var(
            "weight",
            &[img_channels, in_channels, 1, 1],
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        );
        let bias = p.var("bias", &[img_channels], Init::Const(0.0));
        ToRgb {
            affine,
            weight,
            bias,
            weight_gain: 1.0 / (in_channels as f64).sqrt(),
            filter: filter.shallow_clone(),
        }
    }

    pub fn forward(&self, x: &Tensor, w: &Tensor, form: ModConvForm) -> Tensor {
        // Without demodulation the equalised-lr gain goes on the styles.
        let styles = self.affine.forward(w) * self.weight_gain;
        let y = ops::modulated_conv2d(
            x,
            &self.weight,
            &styles,
            None,
            1,
            0,
            &self.filter,
            false,
            form,
        );
        ops::fp16_clamp(ops::bias_act(&y, Some(&self.bias), Act::Linear, 1.0), 1.0)
    }
}
