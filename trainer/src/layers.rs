//! The building blocks of the models: convolution, batch normalisation and
//! linear layers whose variables carry PyTorch's `state_dict` names, and the
//! [`Mode`] a forward pass runs in.

use std::cell::RefCell;

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

thread_local! {
    /// While [`record_positions`] runs: (weight data pointer, output
    /// positions per image) of each convolution and linear layer applied.
    static POSITIONS: RefCell<Option<Vec<(usize, i64)>>> = const { RefCell::new(None) };
}

/// Runs `f` and returns, for every convolution and linear layer it applied,
/// the data pointer of the layer's weight and the number of output
/// positions per image (`H_out x W_out` for a convolution, 1 for a linear
/// layer on a flat input): each non-zero weight costs that many
/// multiply-adds per image, which is what theoretical FLOPs count.
pub fn record_positions<R>(f: impl FnOnce() -> R) -> (R, Vec<(usize, i64)>) {
    POSITIONS.with(|p| *p.borrow_mut() = Some(Vec::new()));
    let r = f();
    let seen = POSITIONS
        .with(|p| p.borrow_mut().take())
        .unwrap_or_default();
    (r, seen)
}

fn note_positions(weight: &Tensor, out: &Tensor) {
    POSITIONS.with(|p| {
        if let Some(seen) = p.borrow_mut().as_mut() {
            let size = out.size();
            let per_image = size.first().map_or(1, |&n| out.numel() as i64 / n.max(1));
            let channels = weight.size()[0].max(1);
            seen.push((weight.data_ptr() as usize, per_image / channels));
        }
    });
}

/// How a forward pass treats batch normalisation and dropout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Training: batch statistics, running statistics updated as an
    /// exponential average with momentum 0.1 (PyTorch's default), dropout on.
    Train,
    /// Inference: running statistics, no dropout.
    Eval,
    /// Recalibrating batch norm: batch statistics, running statistics updated
    /// with weight `factor` (`running = (1 - factor) * running + factor *
    /// batch`), dropout off. Passing `factor = 1/k` for the k-th batch after a
    /// reset gives PyTorch's `momentum=None` cumulative average.
    Calibrate {
        /// Weight of this batch's statistics in the running statistics.
        factor: f64,
    },
}

impl Mode {
    /// Whether dropout is active in this mode.
    pub fn dropout(self) -> bool {
        self == Mode::Train
    }
}

/// A 2-D convolution (`weight`, optional `bias`).
#[derive(Debug)]
pub struct Conv2d {
    /// `out x in x k x k`.
    pub weight: Tensor,
    /// `out`, when the layer has one.
    pub bias: Option<Tensor>,
    stride: i64,
    padding: i64,
}

/// A square convolution with torchvision's initialisation (Kaiming normal,
/// fan-out, ReLU gain) and no bias unless asked for.
pub fn conv2d(
    p: Path,
    c_in: i64,
    c_out: i64,
    k: i64,
    stride: i64,
    padding: i64,
    bias: bool,
) -> Conv2d {
    let std = (2.0 / (c_out * k * k) as f64).sqrt();
    let weight = p.var(
        "weight",
        &[c_out, c_in, k, k],
        Init::Randn {
            mean: 0.0,
            stdev: std,
        },
    );
    let bias = bias.then(|| p.var("bias", &[c_out], Init::Const(0.0)));
    Conv2d {
        weight,
        bias,
        stride,
        padding,
    }
}

impl Conv2d {
    /// Applies the convolution.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let out = xs.conv2d(
            &self.weight,
            self.bias.as_ref(),
            [self.stride],
            [self.padding],
            [1],
            1,
        );
        note_positions(&self.weight, &out);
        out
    }
}

/// A fully connected layer (`weight`, `bias`).
#[derive(Debug)]
pub struct Linear {
    /// `out x in`.
    pub weight: Tensor,
    /// `out`.
    pub bias: Tensor,
}

/// A linear layer with PyTorch's default initialisation: weight and bias
/// uniform in `±1/sqrt(in)`.
pub fn linear(p: Path, c_in: i64, c_out: i64) -> Linear {
    let bound = 1.0 / (c_in as f64).sqrt();
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    Linear {
        weight: p.var("weight", &[c_out, c_in], init),
        bias: p.var("bias", &[c_out], init),
    }
}

impl Linear {
    /// Applies the layer.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let out = xs.linear(&self.weight, Some(&self.bias));
        note_positions(&self.weight, &out);
        out
    }
}

/// Batch normalisation over channels with PyTorch's buffers, including the
/// int64 scalar `num_batches_tracked`.
#[derive(Debug)]
pub struct BatchNorm {
    /// Scale, initialised to 1.
    pub weight: Tensor,
    /// Shift, initialised to 0.
    pub bias: Tensor,
    /// Running mean (buffer).
    pub running_mean: Tensor,
    /// Running variance, unbiased (buffer).
    pub running_var: Tensor,
    /// Batches seen in training mode (int64 scalar buffer).
    pub num_batches_tracked: Tensor,
    /// PyTorch's momentum of the running statistics in training mode.
    pub momentum: f64,
}

/// PyTorch's default momentum for running statistics.
pub const BN_MOMENTUM: f64 = 0.1;
/// PyTorch's default epsilon.
pub const BN_EPS: f64 = 1e-5;

/// A batch-norm layer over `c` channels.
pub fn batch_norm(p: Path, c: i64) -> BatchNorm {
    batch_norm_with_momentum(p, c, BN_MOMENTUM)
}

/// A batch-norm layer whose running statistics move by `momentum` per
/// training batch (PyTorch's meaning; some reference models set it).
pub fn batch_norm_with_momentum(p: Path, c: i64, momentum: f64) -> BatchNorm {
    let nbt = Tensor::zeros([], (Kind::Int64, p.device()));
    BatchNorm {
        weight: p.var("weight", &[c], Init::Const(1.0)),
        bias: p.var("bias", &[c], Init::Const(0.0)),
        running_mean: p.zeros_no_train("running_mean", &[c]),
        running_var: p.ones_no_train("running_var", &[c]),
        num_batches_tracked: p.add("num_batches_tracked", nbt, false),
        momentum,
    }
}

impl BatchNorm {
    /// Normalises `xs` (`N x C x ...`) as `mode` says.
    pub fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let (training, momentum) = match mode {
            Mode::Train => (true, self.momentum),
            Mode::Eval => (false, 0.0),
            Mode::Calibrate { factor } => (true, factor),
        };
        if training {
            let _ = self.num_batches_tracked.shallow_clone().g_add_scalar_(1);
        }
        xs.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            training,
            momentum,
            BN_EPS,
            true,
        )
    }

    /// `relu(self.forward(xs, mode))`, with the ReLU applied in place: batch
    /// norm's backward pass needs its input, not its output, so the output
    /// buffer can be reused and one activation-sized tensor per layer is
    /// neither allocated nor written.
    pub fn forward_relu(&self, xs: &Tensor, mode: Mode) -> Tensor {
        self.forward(xs, mode).relu_()
    }
}

/// `relu(ys + other)`, adding and rectifying in `ys`'s buffer. `ys` must be a
/// fresh result whose value no backward function needs (a convolution's or
/// batch norm's output), as in the residual sum of a ResNet block.
pub fn add_relu_(mut ys: Tensor, other: &Tensor) -> Tensor {
    let _ = ys.g_add_(other);
    ys.relu_()
}
