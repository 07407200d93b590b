//! The architectures the trainer builds, with PyTorch `state_dict` names.
//!
//! - `mlp`: `fc1`, `fc2`, `fc3` (two hidden layers of 256).
//! - `cnn`: three 3x3 conv-BN-ReLU stages (32, 64, 128 channels; max-pooling
//!   after the first two), global average pooling and `fc`. Works for 28x28
//!   and 32x32 inputs alike.
//! - `resnet20`, `resnet56`: He et al.'s CIFAR ResNets (16, 32, 64 channels,
//!   3 stages of n basic blocks), with torchvision's names (`conv1`, `bn1`,
//!   `layer1.0.conv1`, ..., `layerK.0.downsample.0/1` projection shortcuts,
//!   `fc`). The matching PyTorch module is `trainer/python/models.py`.
//! - `wrn-D-W`: Zagoruyko and Komodakis' WideResNet (pre-activation blocks,
//!   `(D-4)/6` blocks per stage), with the names of the widely used PyTorch
//!   implementation (`block1.layer.0.bn1`, `...convShortcut`, `bn1`, `fc`).
//! - `wrn-D-W-ref`: the WideResNet of the sparse-model-soups reference code
//!   (itself from meliketoy's `wide-resnet.pytorch`), name for name:
//!   convolutions with biases, dropout 0.3 between a block's two
//!   convolutions (in training only), the stride on the second convolution,
//!   a 1x1 shortcut with bias from the block's raw input (`layerK.i.bn1,
//!   conv1, bn2, conv2, shortcut.0`), a last `bn1` with PyTorch momentum 0.9,
//!   and `linear`.
//! - `resnet18`, `resnet50`: torchvision's ImageNet ResNets, name for name.

use std::fmt;
use std::str::FromStr;

use tch::nn::Path;
use tch::Tensor;

use crate::error::{Error, Result};
use crate::layers::{
    add_relu_, batch_norm, batch_norm_with_momentum, conv2d, linear, BatchNorm, Conv2d, Linear,
    Mode,
};

/// An architecture, parsed from its command-line name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Multi-layer perceptron.
    Mlp,
    /// Small convolutional net with batch norm.
    Cnn,
    /// CIFAR ResNet-20.
    ResNet20,
    /// CIFAR ResNet-56.
    ResNet56,
    /// WideResNet of the given depth and width factor.
    Wrn {
        /// Total depth; `(depth - 4)` must be a multiple of 6.
        depth: i64,
        /// Width multiplier.
        width: i64,
    },
    /// The reference code's WideResNet (dropout 0.3, conv biases).
    WrnRef {
        /// Total depth; `(depth - 4)` must be a multiple of 6.
        depth: i64,
        /// Width multiplier.
        width: i64,
    },
    /// torchvision ResNet-18.
    ResNet18,
    /// torchvision ResNet-50.
    ResNet50,
}

impl FromStr for Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Arch> {
        let arch = match s {
            "mlp" => Arch::Mlp,
            "cnn" => Arch::Cnn,
            "resnet20" => Arch::ResNet20,
            "resnet56" => Arch::ResNet56,
            "resnet18" => Arch::ResNet18,
            "resnet50" => Arch::ResNet50,
            _ => {
                let parts: Vec<&str> = s.split('-').collect();
                let wrn = |d: &str, w: &str| match (d.parse::<i64>(), w.parse::<i64>()) {
                    (Ok(depth), Ok(width)) if depth >= 10 && (depth - 4) % 6 == 0 && width >= 1 => {
                        Ok((depth, width))
                    }
                    _ => Err(Error::UnknownModel(format!(
                        "{s} (wrn-D-W needs D = 6n + 4 >= 10, W >= 1)"
                    ))),
                };
                match parts[..] {
                    ["wrn", d, w] => {
                        let (depth, width) = wrn(d, w)?;
                        Arch::Wrn { depth, width }
                    }
                    ["wrn", d, w, "ref"] => {
                        let (depth, width) = wrn(d, w)?;
                        Arch::WrnRef { depth, width }
                    }
                    _ => return Err(Error::UnknownModel(s.to_string())),
                }
            }
        };
        Ok(arch)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::Mlp => f.write_str("mlp"),
            Arch::Cnn => f.write_str("cnn"),
            Arch::ResNet20 => f.write_str("resnet20"),
            Arch::ResNet56 => f.write_str("resnet56"),
            Arch::Wrn { depth, width } => write!(f, "wrn-{depth}-{width}"),
            Arch::WrnRef { depth, width } => write!(f, "wrn-{depth}-{width}-ref"),
            Arch::ResNet18 => f.write_str("resnet18"),
            Arch::ResNet50 => f.write_str("resnet50"),
        }
    }
}

/// What a model must know about its input and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// The number of classes (size of the last layer).
    pub num_classes: i64,
    /// `[channels, height, width]` of an input image.
    pub input: [i64; 3],
}

/// A network: a forward pass over a batch of images, giving logits.
pub trait Network: fmt::Debug {
    /// Logits (`B x classes`) for images `xs` (`B x C x H x W`).
    fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor;
}

/// Builds `arch` with its variables under `p` (use the var store's root for
/// PyTorch names). Variables are initialised from libtorch's global
/// generator, so call `tch::manual_seed` first for reproducible weights.
pub fn build(arch: Arch, p: &Path, spec: ModelSpec) -> Box<dyn Network> {
    let [c, h, w] = spec.input;
    let k = spec.num_classes;
    match arch {
        Arch::Mlp => Box::new(Mlp {
            fc1: linear(p / "fc1", c * h * w, 256),
            fc2: linear(p / "fc2", 256, 256),
            fc3: linear(p / "fc3", 256, k),
        }),
        Arch::Cnn => Box::new(Cnn {
            convs: [(1, c, 32), (2, 32, 64), (3, 64, 128)].map(|(i, a, b)| {
                (
                    conv2d(p / format!("conv{i}"), a, b, 3, 1, 1, false),
                    batch_norm(p / format!("bn{i}"), b),
                )
            }),
            fc: linear(p / "fc", 128, k),
        }),
        Arch::ResNet20 => Box::new(ResNet::cifar(p, c, 3, k)),
        Arch::ResNet56 => Box::new(ResNet::cifar(p, c, 9, k)),
        Arch::ResNet18 => Box::new(ResNet::imagenet(p, c, false, [2, 2, 2, 2], k)),
        Arch::ResNet50 => Box::new(ResNet::imagenet(p, c, true, [3, 4, 6, 3], k)),
        Arch::Wrn { depth, width } => Box::new(Wrn::new(p, c, depth, width, k)),
        Arch::WrnRef { depth, width } => Box::new(WrnRef::new(p, c, depth, width, k)),
    }
}

#[derive(Debug)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl Network for Mlp {
    fn forward(&self, xs: &Tensor, _mode: Mode) -> Tensor {
        let xs = xs.flatten(1, -1);
        self.fc3
            .forward(&self.fc2.forward(&self.fc1.forward(&xs).relu_()).relu_())
    }
}

#[derive(Debug)]
struct Cnn {
    convs: [(Conv2d, BatchNorm); 3],
    fc: Linear,
}

impl Network for Cnn {
    fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let mut xs = xs.shallow_clone();
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            xs = bn.forward_relu(&conv.forward(&xs), mode);
            if i < 2 {
                xs = xs.max_pool2d([2], [2], [0], [1], false);
            }
        }
        self.fc
            .forward(&xs.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
    }
}

/// A residual block of a ResNet: basic (two 3x3) or bottleneck (1x1, 3x3,
/// 1x1 with stride on the 3x3, torchvision's "v1.5").
#[derive(Debug)]
struct Block {
    convs: Vec<(Conv2d, BatchNorm)>,
    downsample: Option<(Conv2d, BatchNorm)>,
}

impl Block {
    fn new(p: Path, c_in: i64, planes: i64, stride: i64, bottleneck: bool) -> Block {
        let (convs, c_out) = if bottleneck {
            let c_out = planes * 4;
            let specs = [
                (c_in, planes, 1, 1, 0),
                (planes, planes, 3, stride, 1),
                (planes, c_out, 1, 1, 0),
            ];
            (specs.to_vec(), c_out)
        } else {
            (
                vec![(c_in, planes, 3, stride, 1), (planes, planes, 3, 1, 1)],
                planes,
            )
        };
        let convs = convs
            .into_iter()
            .enumerate()
            .map(|(i, (a, b, k, s, pad))| {
                (
                    conv2d(&p / format!("conv{}", i + 1), a, b, k, s, pad, false),
                    batch_norm(&p / format!("bn{}", i + 1), b),
                )
            })
            .collect();
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            let d = &p / "downsample";
            (
                conv2d(&d / "0", c_in, c_out, 1, stride, 0, false),
                batch_norm(&d / "1", c_out),
            )
        });
        Block { convs, downsample }
    }

    fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let last = self.convs.len() - 1;
        let mut ys = xs.shallow_clone();
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            ys = if i < last {
                bn.forward_relu(&conv.forward(&ys), mode)
            } else {
                bn.forward(&conv.forward(&ys), mode)
            };
        }
        let shortcut = match &self.downsample {
            Some((conv, bn)) => bn.forward(&conv.forward(xs), mode),
            None => xs.shallow_clone(),
        };
        add_relu_(ys, &shortcut)
    }
}

#[derive(Debug)]
struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    /// ImageNet stem: 3x3 max-pooling after the first convolution.
    stem_pool: bool,
    layers: Vec<Block>,
    fc: Linear,
}

impl ResNet {
    fn stages(
        p: &Path,
        mut c_in: i64,
        widths: &[i64],
        depths: &[i64],
        bottleneck: bool,
    ) -> (Vec<Block>, i64) {
        let mut layers = Vec::new();
        for (i, (&planes, &n)) in widths.iter().zip(depths).enumerate() {
            let stage = p / format!("layer{}", i + 1);
            for j in 0..n {
                let stride = if i > 0 && j == 0 { 2 } else { 1 };
                layers.push(Block::new(&stage / j, c_in, planes, stride, bottleneck));
                c_in = if bottleneck { planes * 4 } else { planes };
            }
        }
        (layers, c_in)
    }

    fn cifar(p: &Path, c: i64, n: i64, k: i64) -> ResNet {
        let (layers, c_out) = Self::stages(p, 16, &[16, 32, 64], &[n, n, n], false);
        ResNet {
            conv1: conv2d(p / "conv1", c, 16, 3, 1, 1, false),
            bn1: batch_norm(p / "bn1", 16),
            stem_pool: false,
            layers,
            fc: linear(p / "fc", c_out, k),
        }
    }

    fn imagenet(p: &Path, c: i64, bottleneck: bool, depths: [i64; 4], k: i64) -> ResNet {
        let (layers, c_out) = Self::stages(p, 64, &[64, 128, 256, 512], &depths, bottleneck);
        ResNet {
            conv1: conv2d(p / "conv1", c, 64, 7, 2, 3, false),
            bn1: batch_norm(p / "bn1", 64),
            stem_pool: true,
            layers,
            fc: linear(p / "fc", c_out, k),
        }
    }
}

impl Network for ResNet {
    fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let mut xs = self.bn1.forward_relu(&self.conv1.forward(xs), mode);
        if self.stem_pool {
            xs = xs.max_pool2d([3], [2], [1], [1], false);
        }
        for block in &self.layers {
            xs = block.forward(&xs, mode);
        }
        self.fc
            .forward(&xs.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
    }
}

/// A pre-activation WideResNet block.
#[derive(Debug)]
struct WrnBlock {
    bn1: BatchNorm,
    conv1: Conv2d,
    bn2: BatchNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl WrnBlock {
    fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let act = self.bn1.forward_relu(xs, mode);
        let ys = self.conv1.forward(&act);
        let mut ys = self.conv2.forward(&self.bn2.forward_relu(&ys, mode));
        let _ = match &self.shortcut {
            // When the shape changes, the shortcut taps the activated input.
            Some(conv) => ys.g_add_(&conv.forward(&act)),
            None => ys.g_add_(xs),
        };
        ys
    }
}

#[derive(Debug)]
struct Wrn {
    conv1: Conv2d,
    blocks: Vec<WrnBlock>,
    bn1: BatchNorm,
    fc: Linear,
}

impl Wrn {
    fn new(p: &Path, c: i64, depth: i64, width: i64, k: i64) -> Wrn {
        let n = (depth - 4) / 6;
        let mut c_in = 16;
        let mut blocks = Vec::new();
        for (i, planes) in [16 * width, 32 * width, 64 * width].into_iter().enumerate() {
            let stage = p / format!("block{}", i + 1) / "layer";
            for j in 0..n {
                let q = &stage / j;
                let stride = if i > 0 && j == 0 { 2 } else { 1 };
                blocks.push(WrnBlock {
                    bn1: batch_norm(&q / "bn1", c_in),
                    conv1: conv2d(&q / "conv1", c_in, planes, 3, stride, 1, false),
                    bn2: batch_norm(&q / "bn2", planes),
                    conv2: conv2d(&q / "conv2", planes, planes, 3, 1, 1, false),
                    shortcut: (c_in != planes)
                        .then(|| conv2d(&q / "convShortcut", c_in, planes, 1, stride, 0, false)),
                });
                c_in = planes;
            }
        }
        Wrn {
            conv1: conv2d(p / "conv1", c, 16, 3, 1, 1, false),
            blocks,
            bn1: batch_norm(p / "bn1", c_in),
            fc: linear(p / "fc", c_in, k),
        }
    }
}

impl Network for Wrn {
    fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let mut xs = self.conv1.forward(xs);
        for block in &self.blocks {
            xs = block.forward(&xs, mode);
        }
        let xs = self.bn1.forward_relu(&xs, mode);
        self.fc
            .forward(&xs.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
    }
}

/// The dropout rate of the reference WideResNet's blocks.
pub const WRN_REF_DROPOUT: f64 = 0.3;

/// A block of the reference code's WideResNet: pre-activation, dropout
/// between the convolutions, the stride on the second one, and a shortcut
/// from the raw (not activated) input.
#[derive(Debug)]
struct WrnRefBlock {
    bn1: BatchNorm,
    conv1: Conv2d,
    bn2: BatchNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl WrnRefBlock {
    fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let ys = self.conv1.forward(&self.bn1.forward_relu(xs, mode));
        // Dropout only in training: recalibration and evaluation see the
        // whole network (Mode::dropout).
        let ys = ys.dropout(WRN_REF_DROPOUT, mode.dropout());
        let mut ys = self.conv2.forward(&self.bn2.forward_relu(&ys, mode));
        let _ = match &self.shortcut {
            Some(conv) => ys.g_add_(&conv.forward(xs)),
            None => ys.g_add_(xs),
        };
        ys
    }
}

#[derive(Debug)]
struct WrnRef {
    conv1: Conv2d,
    blocks: Vec<WrnRefBlock>,
    bn1: BatchNorm,
    linear: Linear,
}

impl WrnRef {
    fn new(p: &Path, c: i64, depth: i64, width: i64, k: i64) -> WrnRef {
        let n = (depth - 4) / 6;
        let mut c_in = 16;
        let mut blocks = Vec::new();
        for (i, planes) in [16 * width, 32 * width, 64 * width].into_iter().enumerate() {
            let stage = p / format!("layer{}", i + 1);
            for j in 0..n {
                let q = &stage / j;
                let stride = if i > 0 && j == 0 { 2 } else { 1 };
                blocks.push(WrnRefBlock {
                    bn1: batch_norm(&q / "bn1", c_in),
                    conv1: conv2d(&q / "conv1", c_in, planes, 3, 1, 1, true),
                    bn2: batch_norm(&q / "bn2", planes),
                    conv2: conv2d(&q / "conv2", planes, planes, 3, stride, 1, true),
                    shortcut: (stride != 1 || c_in != planes)
                        .then(|| conv2d(&q / "shortcut" / "0", c_in, planes, 1, stride, 0, true)),
                });
                c_in = planes;
            }
        }
        WrnRef {
            conv1: conv2d(p / "conv1", c, 16, 3, 1, 1, true),
            blocks,
            // The reference builds its last batch norm with momentum=0.9.
            bn1: batch_norm_with_momentum(p / "bn1", c_in, 0.9),
            linear: linear(p / "linear", c_in, k),
        }
    }
}

impl Network for WrnRef {
    fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let mut xs = self.conv1.forward(xs);
        for block in &self.blocks {
            xs = block.forward(&xs, mode);
        }
        let xs = self.bn1.forward_relu(&xs, mode);
        self.linear
            .forward(&xs.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
    }
}
