//! The self-attention (non-local) block of SAGAN (Zhang, Goodfellow, Metaxas, Odena 2019) as
//! BigGAN-PyTorch implements it (`layers.Attention`): 1x1 convolutions `theta`, `phi` (C/8) and
//! `g` (C/2) without biases, `phi` and `g` max-pooled by 2, softmax over the pooled positions,
//! `o` (C/2 -> C), and `gamma * o + x` with a learned scalar `gamma` that starts at 0. The
//! convolutions are spectrally normalised when their network is.
//!
//! Departures: none. The block mixes positions within a sample only, so it keeps `embed` free of
//! cross-sample operations.

use super::init::LayerInit;
use super::layers::{Conv2d, LayerOpts};
use tch::{nn, Kind, Tensor};

#[derive(Debug)]
pub struct SelfAttention {
    channels: i64,
    theta: Conv2d,
    phi: Conv2d,
    g: Conv2d,
    o: Conv2d,
    gamma: Tensor,
}

impl SelfAttention {
    pub fn new(p: nn::Path, channels: i64, init: LayerInit, sn: bool) -> Self {
        let opts = LayerOpts {
            init,
            bias: false,
            sn,
        };
        let c = channels;
        SelfAttention {
            channels: c,
            theta: Conv2d::new(&p / "theta", c, c / 8, 1, opts),
            phi: Conv2d::new(&p / "phi", c, c / 8, 1, opts),
            g: Conv2d::new(&p / "g", c, c / 2, 1, opts),
            o: Conv2d::new(&p / "o", c / 2, c, 1, opts),
            gamma: p.add(
                "gamma",
                Tensor::zeros(&[] as &[i64], (Kind::Float, p.device())),
                true,
            ),
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let s = x.size();
        let (b, c, h, w) = (s[0], self.channels, s[2], s[3]);
        let pool = |t: Tensor| t.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
        let theta = self.theta.forward_t(x, train).view([b, c / 8, h * w]);
        let phi = pool(self.phi.forward_t(x, train)).view([b, c / 8, h * w / 4]);
        let g = pool(self.g.forward_t(x, train)).view([b, c / 2, h * w / 4]);
        let beta = theta.transpose(1, 2).bmm(&phi).softmax(-1, None::<Kind>);
        let o = self
            .o
            .forward_t(&g.bmm(&beta.transpose(1, 2)).view([b, c / 2, h, w]), train);
        &self.gamma * o + x
    }
}
