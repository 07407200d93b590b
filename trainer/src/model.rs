//! A built model: its architecture, its variables in a `VarStore` under
//! PyTorch names, and checkpoint input and output.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::arch::{build, Arch, ModelSpec, Network};
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::layers::Mode;

/// A model ready to train or evaluate.
#[derive(Debug)]
pub struct Model {
    /// The architecture.
    pub arch: Arch,
    /// Input shape and class count.
    pub spec: ModelSpec,
    /// Every parameter and buffer, by PyTorch `state_dict` name.
    pub vs: VarStore,
    net: Box<dyn Network>,
    channels_last: bool,
}

impl Model {
    /// Builds `arch` on `device`, initialised from libtorch's global
    /// generator (seed it with `tch::manual_seed` first).
    ///
    /// On the CPU, convolutional models keep their 4-D weights and
    /// activations in the channels-last layout, where oneDNN's convolutions
    /// are much faster; names, shapes and values are unaffected.
    pub fn new(arch: Arch, spec: ModelSpec, device: Device) -> Model {
        let vs = VarStore::new(device);
        let net = build(arch, &vs.root(), spec);
        let channels_last = device == Device::Cpu && arch != Arch::Mlp;
        if channels_last {
            tch::no_grad(|| {
                for (_, mut t) in vs.variables() {
                    if t.dim() == 4 {
                        t.set_data(&to_channels_last(&t));
                    }
                }
            });
        }
        Model {
            arch,
            spec,
            vs,
            net,
            channels_last,
        }
    }

    /// Logits for a batch of images.
    pub fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        if self.channels_last && xs.dim() == 4 {
            self.net.forward(&to_channels_last(xs), mode)
        } else {
            self.net.forward(xs, mode)
        }
    }

    /// The device the variables live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Every parameter and buffer by name (shallow handles, sorted by name).
    pub fn state_dict(&self) -> BTreeMap<String, Tensor> {
        self.vs.variables().into_iter().collect()
    }

    /// The names of the prunable tensors: weights of convolution and linear
    /// layers (every `*.weight` with two or more dimensions), sorted. Biases
    /// and batch-norm parameters and buffers are never prunable.
    pub fn prunable_names(&self) -> Vec<String> {
        self.state_dict()
            .into_iter()
            .filter(|(n, t)| is_prunable(n, t))
            .map(|(n, _)| n)
            .collect()
    }

    /// Writes every parameter and buffer to `path` (safetensors, atomic),
    /// recording the architecture and spec in the metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self.state_dict().into_iter().collect();
        let [c, h, w] = self.spec.input;
        let meta = HashMap::from([
            ("format".to_string(), "pt".to_string()),
            ("arch".to_string(), self.arch.to_string()),
            ("num_classes".to_string(), self.spec.num_classes.to_string()),
            ("input".to_string(), format!("{c}x{h}x{w}")),
            (
                "producer".to_string(),
                format!("trainer {}", env!("CARGO_PKG_VERSION")),
            ),
        ]);
        checkpoint::save(path, &tensors, meta)
    }

    /// Loads a checkpoint into the model, strictly: every variable must be in
    /// the file with the same shape, and the file may hold nothing else.
    /// Floating-point tensors are converted to the model's precision.
    pub fn load(&self, path: &Path) -> Result<()> {
        let ck = checkpoint::load(path)?;
        self.load_tensors(&ck.tensors, path)
    }

    /// Copies named tensors into the model with the checks of
    /// [`Model::load`]; `origin` names their source in errors.
    pub fn load_tensors(&self, tensors: &[(String, Tensor)], origin: &Path) -> Result<()> {
        let mut vars = self.state_dict();
        let given: BTreeMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let missing: Vec<&String> = vars
            .keys()
            .filter(|n| !given.contains_key(n.as_str()))
            .collect();
        let unexpected: Vec<&&str> = given.keys().filter(|n| !vars.contains_key(**n)).collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            return Err(Error::checkpoint(
                origin,
                format!(
                    "does not fit {}: missing {missing:?}, unexpected {unexpected:?}",
                    self.arch
                ),
            ));
        }
        tch::no_grad(|| {
            for (name, var) in vars.iter_mut() {
                let src = given[name.as_str()];
                if src.size() != var.size() {
                    return Err(Error::checkpoint(
                        origin,
                        format!(
                            "tensor {name} has shape {:?}, the model expects {:?}",
                            src.size(),
                            var.size()
                        ),
                    ));
                }
                if is_float(src.kind()) != is_float(var.kind()) {
                    return Err(Error::checkpoint(
                        origin,
                        format!(
                            "tensor {name} has kind {:?}, the model expects {:?}",
                            src.kind(),
                            var.kind()
                        ),
                    ));
                }
                var.f_copy_(&src.to_kind(var.kind()))?;
            }
            Ok(())
        })
    }
}

/// Whether a tensor is a prunable weight (see [`Model::prunable_names`]):
/// soup-core's rule, the one `soup prune` and the trainer's pruning apply.
pub fn is_prunable(name: &str, t: &Tensor) -> bool {
    soup_core::is_prunable(name, t.dim(), is_float(t.kind()))
}

/// The same values as `t` (`N x C x H x W`), laid out channels-last (strides
/// of `N x H x W x C`); PyTorch's `memory_format=torch.channels_last`.
///
/// The strides are set explicitly: with one channel, a permuted copy would
/// keep NCHW strides (both layouts are contiguous then) and libtorch would
/// pick NCHW kernels for the whole first block.
pub fn to_channels_last(t: &Tensor) -> Tensor {
    let &[_, c, h, w] = &t.size()[..] else {
        return t.shallow_clone();
    };
    let strides = [c * h * w, 1, w * c, c];
    if t.stride() == strides {
        return t.shallow_clone();
    }
    let mut out = Tensor::empty_strided(t.size(), strides, (t.kind(), t.device()));
    // copy_ is differentiable, so gradients flow back to `t` when it needs them.
    out.copy_(t);
    out
}

fn is_float(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
    )
}
