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
