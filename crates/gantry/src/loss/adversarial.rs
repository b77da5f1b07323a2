//! The adversarial losses, written on logits (the sigmoid lives in the loss, not in D).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Adversarial {
    /// Goodfellow et al. 2014 with the non-saturating G loss: softplus form of BCE.
    NonSaturating,
    /// Lim & Ye 2017 / SNGAN / BigGAN.
    Hinge,
    /// LSGAN (Mao et al. 2017) with targets a=0, b=1, c=1.
    LeastSquares,
    /// WGAN critic loss (pair with `loss.gp.enabled`).
    Wasserstein,
    /// Relativistic pairing (RpGAN, Jolicoeur-Martineau 2019; R3GAN's loss): each fake is scored
    /// against the real sample of the same index, `softplus(D(fake) - D(real))` for D and
    /// `softplus(D(real) - D(fake))` for G, so G's step also needs D's logits on a real batch.
    /// R3GAN pairs it with R1 and R2 (`loss.r1.gamma`, `loss.r2.gamma`).
    Relativistic,
}

impl Adversarial {
    /// Whether D's scores straddle 0 between reals and fakes (what ADA's sign heuristic
    /// assumes): not for least squares (targets 0 and 1), Wasserstein (any offset), nor the
    /// relativistic loss, which (with R1 and R2) is unchanged by a constant added to D, so the
    /// sign of D(real) says nothing about overfitting.
    pub fn scores_centred(self) -> bool {
        !matches!(
            self,
            Adversarial::LeastSquares | Adversarial::Wasserstein | Adversarial::Relativistic
        )
    }

    /// What D minimises, given its logits on a real and a fake batch.
    pub fn d_loss(self, real: &Tensor, fake: &Tensor) -> Tensor {
        match self {
            Adversarial::NonSaturating => {
                real.neg().softplus().mean(None::<Kind>) + fake.softplus().mean(None::<Kind>)
            }
            Adversarial::Hinge => {
                (real.neg() + 1.0).relu().mean(None::<Kind>)
                    + (fake + 1.0).relu().mean(None::<Kind>)
            }
            Adversarial::LeastSquares => {
                0.5 * ((real - 1.0).square().mean(None::<Kind>) + fake.square().mean(None::<Kind>))
            }
            Adversarial::Wasserstein => fake.mean(None::<Kind>) - real.mean(None::<Kind>),
            Adversarial::Relativistic => (fake - real).softplus().mean(None::<Kind>),
        }
    }

    /// Whether G's loss needs D's logits on a real batch ([`Adversarial::Relativistic`]).
    pub fn g_needs_real(self) -> bool {
        self == Adversarial::Relativistic
    }

    /// What G minimises, given D's logits on its fakes (and on a real batch, for the losses that
    /// [need them](Self::g_needs_real); `None` for the others).
    pub fn g_loss(self, fake: &Tensor, real: Option<&Tensor>) -> Tensor {
        match (self, real) {
            (Adversarial::NonSaturating, _) => fake.neg().softplus().mean(None::<Kind>),
            (Adversarial::Hinge | Adversarial::Wasserstein, _) => fake.mean(None::<Kind>).neg(),
            (Adversarial::LeastSquares, _) => 0.5 * (fake - 1.0).square().mean(None::<Kind>),
            (Adversarial::Relativistic, Some(real)) => (real - fake).softplus().mean(None::<Kind>),
            // The G phase always passes real logits for this loss (objective::g_phase).
            (Adversarial::Relativistic, None) => fake.neg().softplus().mean(None::<Kind>),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn t(v: &[f64]) -> Tensor {
        Tensor::from_slice(v)
            .to_kind(Kind::Float)
            .to_device(Device::Cpu)
    }
    fn close(a: Tensor, b: f64) {
        let a = a.double_value(&[]);
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    #[test]
    fn values_match_their_definitions() {
        let (r, f) = (t(&[2.0, -1.0]), t(&[0.5, -3.0]));
        let sp = |x: f64| (1.0 + x.exp()).ln();
        close(
            Adversarial::NonSaturating.d_loss(&r, &f),
            (sp(-2.0) + sp(1.0)) / 2.0 + (sp(0.5) + sp(-3.0)) / 2.0,
        );
        close(
            Adversarial::NonSaturating.g_loss(&f, None),
            (sp(-0.5) + sp(3.0)) / 2.0,
        );
        close(
            Adversarial::Hinge.d_loss(&r, &f),
            (0.0 + 2.0) / 2.0 + (1.5 + 0.0) / 2.0,
        );
        close(Adversarial::Hinge.g_loss(&f, None), 1.25);
        close(
            Adversarial::LeastSquares.d_loss(&r, &f),
            0.5 * ((1.0 + 4.0) / 2.0 + (0.25 + 9.0) / 2.0),
        );
        close(
            Adversarial::LeastSquares.g_loss(&f, None),
            0.5 * (0.25 + 16.0) / 2.0,
        );
        close(Adversarial::Wasserstein.d_loss(&r, &f), -1.25 - 0.5);
        close(Adversarial::Wasserstein.g_loss(&f, None), 1.25);
        // Pairs (2, 0.5) and (-1, -3): softplus(f - r) for D, softplus(r - f) for G.
        close(
            Adversarial::Relativistic.d_loss(&r, &f),
            (sp(-1.5) + sp(-2.0)) / 2.0,
        );
        close(
            Adversarial::Relativistic.g_loss(&f, Some(&r)),
            (sp(1.5) + sp(2.0)) / 2.0,
        );
    }
}
