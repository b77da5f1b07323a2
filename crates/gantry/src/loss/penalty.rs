//! Gradient penalties. Both need the gradient of D's output with respect to its input *as part of
//! the graph* (create_graph), so that D's parameters receive the second-order gradient.

use tch::{Kind, Tensor};

/// Per-sample gradient of `sum(logits)` with respect to `x`, kept in the graph.
fn input_gradient(logits: &Tensor, x: &Tensor) -> Tensor {
    let grads = Tensor::run_backward(&[logits.sum(None::<Kind>)], &[x], true, true);
    grads.into_iter().next().expect("one input")
}

/// WGAN-GP: `E[(||grad_x D(x_hat)||_2 - 1)^2]` at `x_hat = eps * real + (1 - eps) * fake`, with one
/// uniform `eps` per sample. `critic` is the plain D (no plug-ins), as the AdaptiveMix spec says.
pub fn gradient_penalty(
    critic: impl FnOnce(&Tensor) -> Tensor,
    real: &Tensor,
    fake: &Tensor,
) -> Tensor {
    let mut shape = vec![real.size()[0]];
    shape.extend(std::iter::repeat_n(1, real.dim() - 1));
    let eps = Tensor::rand(shape.as_slice(), (real.kind(), real.device()));
    gradient_penalty_at(critic, real, fake, &eps)
}

/// [`gradient_penalty`] with given interpolation weights `eps` (`[B, 1, 1, 1]`).
pub fn gradient_penalty_at(
    critic: impl FnOnce(&Tensor) -> Tensor,
    real: &Tensor,
    fake: &Tensor,
    eps: &Tensor,
) -> Tensor {
    let x_hat = (real.detach() * eps + fake.detach() * (eps.neg() + 1.0)).set_requires_grad(true);
    let grad = input_gradient(&critic(&x_hat), &x_hat);
    let norm = grad
        .flatten(1, -1)
        .square()
        .sum_dim_intlist(1, false, None::<Kind>)
        .g_add_scalar(1e-12)
        .sqrt();
    (norm - 1.0).square().mean(None::<Kind>)
}

/// R1: `E[||grad_x D(x)||^2]` for logits computed from `real` (which must require grad). The caller
/// scales by gamma/2. With AdaptiveMix, `logits` are the mixed real logits, `real` the clean batch.
pub fn r1(logits: &Tensor, real: &Tensor) -> Tensor {
    r1_scaled(logits, real, 1.0)
}

/// [`r1`] with the input gradient taken of `inner_scale * logits` and divided back: under fp16
/// autocast the backward through D runs in fp16, where per-pixel gradients underflow; scaling by
/// the loss scale keeps them representable (torch.amp's gradient-penalty recipe). An overflow
/// makes the penalty infinite, and the step is skipped like any fp16 overflow.
pub fn r1_scaled(logits: &Tensor, real: &Tensor, inner_scale: f64) -> Tensor {
    let grad = if inner_scale == 1.0 {
        input_gradient(logits, real)
    } else {
        input_gradient(&(logits * inner_scale), real) / inner_scale
    };
    grad.flatten(1, -1)
        .square()
        .sum_dim_intlist(1, false, None::<Kind>)
        .mean(None::<Kind>)
}
