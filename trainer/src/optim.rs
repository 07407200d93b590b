//! SGD with momentum and weight decay, following `torch.optim.SGD` step for
//! step, with its momentum buffers open to the caller (the sparse-model-soup
//! loop masks them).

use tch::nn::VarStore;
use tch::Tensor;

/// Settings of [`Sgd`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Momentum factor (0 for plain SGD).
    pub momentum: f64,
    /// L2 penalty added to the gradient, on every parameter.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl SgdConfig {
    /// The project's rule: Nesterov momentum exactly when weight decay is on.
    pub fn new(momentum: f64, weight_decay: f64) -> SgdConfig {
        SgdConfig {
            momentum,
            weight_decay,
            nesterov: weight_decay > 0.0 && momentum > 0.0,
        }
    }
}

/// One trainable parameter and its optimizer state.
#[derive(Debug)]
pub struct Param {
    /// The `state_dict` name.
    pub name: String,
    /// The variable (shares storage with the model).
    pub tensor: Tensor,
    /// The momentum buffer, created on the first step.
    pub momentum_buffer: Option<Tensor>,
}

/// Stochastic gradient descent over the trainable variables of a var store.
#[derive(Debug)]
pub struct Sgd {
    /// Parameters in name order.
    pub params: Vec<Param>,
    /// The settings.
    pub config: SgdConfig,
    /// The learning rate of the next step.
    pub lr: f64,
}

impl Sgd {
    /// A fresh optimizer (no momentum yet) over every trainable variable.
    pub fn new(vs: &VarStore, config: SgdConfig) -> Sgd {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let params = vars
            .into_iter()
            .map(|(name, tensor)| Param {
                name,
                tensor,
                momentum_buffer: None,
            })
            .collect();
        Sgd {
            params,
            config,
            lr: 0.0,
        }
    }

    /// Sets the learning rate of the next step.
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.tensor.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// Backpropagates `loss` then steps.
    pub fn backward_step(&mut self, loss: &Tensor) {
        self.zero_grad();
        loss.backward();
        self.step();
    }

    /// One update, as `torch.optim.SGD` (dampening 0): `d = g + wd * w`;
    /// `buf = d` on the first step, else `buf = momentum * buf + d`;
    /// `d = d + momentum * buf` (Nesterov) or `d = buf`; `w -= lr * d`.
    pub fn step(&mut self) {
        let SgdConfig {
            momentum,
            weight_decay,
            nesterov,
        } = self.config;
        let lr = self.lr;
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                let mut d = if weight_decay != 0.0 {
                    &grad + &p.tensor * weight_decay
                } else {
                    grad
                };
                if momentum != 0.0 {
                    let buf = match &mut p.momentum_buffer {
                        Some(buf) => {
                            let _ = buf.g_mul_scalar_(momentum).g_add_(&d);
                            buf
                        }
                        None => p.momentum_buffer.insert(d.copy()),
                    };
                    d = if nesterov {
                        d + &*buf * momentum
                    } else {
                        buf.shallow_clone()
                    };
                }
                let _ = p.tensor.g_sub_(&(d * lr));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Three steps with fixed gradients against `torch.optim.SGD`'s update
    /// (dampening 0) written out in f64.
    fn follows_torch(momentum: f64, weight_decay: f64) {
        let vs = VarStore::new(Device::Cpu);
        let w0 = [0.5f32, -1.25, 2.0];
        let w = vs.root().var_copy("w", &Tensor::from_slice(&w0));
        let config = SgdConfig::new(momentum, weight_decay);
        let mut opt = Sgd::new(&vs, config);
        let grads = [[0.1f32, -0.2, 0.3], [0.05, 0.4, -0.1], [-0.3, 0.0, 0.2]];
        let lrs = [0.1, 0.05, 0.2];
        let mut want = w0.map(f64::from);
        let mut buf: Option<[f64; 3]> = None;
        for (g, lr) in grads.iter().zip(lrs) {
            // The gradient of sum(w * g) is g.
            let loss = (&w * Tensor::from_slice(g)).sum(Kind::Float);
            opt.set_lr(lr);
            opt.backward_step(&loss);

            let d: [f64; 3] = std::array::from_fn(|i| f64::from(g[i]) + weight_decay * want[i]);
            let b = match buf {
                None => d,
                Some(b) => std::array::from_fn(|i| momentum * b[i] + d[i]),
            };
            buf = Some(b);
            for i in 0..3 {
                let step = if config.nesterov {
                    d[i] + momentum * b[i]
                } else if momentum != 0.0 {
                    b[i]
                } else {
                    d[i]
                };
                want[i] -= lr * step;
            }
            let got = Vec::<f32>::try_from(&w.detach()).unwrap();
            for i in 0..3 {
                assert!(
                    (f64::from(got[i]) - want[i]).abs() < 1e-6,
                    "momentum {momentum}, weight decay {weight_decay}: {got:?} against {want:?}"
                );
            }
        }
        let kept = Vec::<f32>::try_from(opt.params[0].momentum_buffer.as_ref().unwrap()).unwrap();
        let b = buf.unwrap();
        for i in 0..3 {
            assert!(
                (f64::from(kept[i]) - b[i]).abs() < 1e-6,
                "{kept:?} against {b:?}"
            );
        }
    }

    #[test]
    fn nesterov_momentum_with_weight_decay_follows_torch() {
        follows_torch(0.9, 0.05);
    }

    #[test]
    fn plain_momentum_follows_torch() {
        follows_torch(0.9, 0.0);
    }
}
