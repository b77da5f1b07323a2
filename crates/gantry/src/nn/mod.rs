//! Small layer helpers shared by the architectures.

pub mod attention;
pub mod init;
pub mod layers;
pub mod norm;
pub mod spectral;

use tch::Tensor;

/// LeakyReLU with a chosen slope. tch's `leaky_relu` fixes the slope at 0.01, so this goes
/// through PReLU with a constant weight: one kernel forward, one backward, same values.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Tensor {
    let w = Tensor::full([1], slope, (x.kind(), x.device()));
    x.prelu(&w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition_and_its_gradient() {
        let x = Tensor::from_slice(&[-2.0f64, -0.5, 0.0, 1.5]).set_requires_grad(true);
        let y = leaky_relu(&x, 0.2);
        assert_eq!(Vec::<f64>::try_from(&y).unwrap(), [-0.4, -0.1, 0.0, 1.5]);
        y.sum(tch::Kind::Double).backward();
        assert_eq!(Vec::<f64>::try_from(x.grad()).unwrap(), [0.2, 0.2, 0.2, 1.0]);
    }
}
