//! Merge methods: what a method is (the [`Kernel`] trait), the parameters
//! a caller gives it ([`MethodParams`]), and the registry that names them
//! ([`METHODS`]). A method is one module implementing [`Kernel`] plus one
//! line in [`METHODS`]; front ends list and parse methods through the
//! registry, so a new method reaches them without further changes.

use serde::{Deserialize, Serialize};

use crate::dtype::FloatType;
use crate::error::{Error, Result};

use super::{dare, mean, task_arithmetic, ties};

/// The parameters a merge method may take. Which ones a method accepts is
/// listed in its [`MethodEntry`]; a parameter it does not take is an error.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MethodParams {
    /// One weight per candidate (normalised to sum 1 by the weighted mean;
    /// taken as given by the task-vector methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
    /// Factor applied to the combined task vector before it is added to
    /// the base (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Share of each task vector's surviving entries kept by the trim of
    /// TIES or the random drop of DARE, in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub density: Option<f64>,
    /// Seed of DARE's random drop (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// A parameter of [`MethodParams`], as listed in a [`MethodEntry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// [`MethodParams::weights`].
    Weights,
    /// [`MethodParams::scale`].
    Scale,
    /// [`MethodParams::density`].
    Density,
    /// [`MethodParams::seed`].
    Seed,
}

impl Param {
    /// The parameter's name.
    pub fn name(self) -> &'static str {
        match self {
            Param::Weights => "weights",
            Param::Scale => "scale",
            Param::Density => "density",
            Param::Seed => "seed",
        }
    }

    fn given(self, p: &MethodParams) -> bool {
        match self {
            Param::Weights => p.weights.is_some(),
            Param::Scale => p.scale.is_some(),
            Param::Density => p.density.is_some(),
            Param::Seed => p.seed.is_some(),
        }
    }
}

/// How the inputs' float tensors are combined: a method of [`METHODS`]
/// by name, and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeMethod {
    /// The method's name in [`METHODS`].
    pub name: String,
    /// Its parameters.
    #[serde(flatten)]
    pub params: MethodParams,
}

impl Default for MergeMethod {
    fn default() -> Self {
        MergeMethod::uniform()
    }
}

impl MergeMethod {
    /// The plain mean (a uniform soup).
    pub fn uniform() -> MergeMethod {
        MergeMethod::named("uniform", MethodParams::default())
    }

    /// A weighted mean: one non-negative weight per input, normalised to
    /// sum 1.
    pub fn weighted(weights: Vec<f64>) -> MergeMethod {
        let params = MethodParams {
            weights: Some(weights),
            ..MethodParams::default()
        };
        MergeMethod::named("weighted", params)
    }

    /// The method `name` of [`METHODS`] with `params` (checked when the
    /// merge starts, or by [`MergeMethod::check`]).
    pub fn named(name: &str, params: MethodParams) -> MergeMethod {
        MergeMethod {
            name: name.to_string(),
            params,
        }
    }

    /// The method's name, as recorded in the recipe.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The method's registry entry; an error for an unknown name.
    pub fn entry(&self) -> Result<&'static MethodEntry> {
        METHODS.iter().find(|m| m.name == self.name).ok_or_else(|| {
            let known: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
            Error::invalid(format!(
                "unknown merge method `{}` (known: {})",
                self.name,
                known.join(", ")
            ))
        })
    }

    /// Checks the method and its parameters for `candidates` candidates
    /// and whether a base is given; returns the weight of each candidate
    /// (normalised for the means, as given for the task-vector methods).
    pub fn check(&self, candidates: usize, base: bool) -> Result<Vec<f64>> {
        Ok(self.build(candidates, base)?.weights)
    }

    /// The normalised weight of each of `inputs` inputs of a mean; an error
    /// for weights that do not fit.
    pub fn weights(&self, inputs: usize) -> Result<Vec<f64>> {
        self.check(inputs, false)
    }

    pub(crate) fn build(&self, candidates: usize, base: bool) -> Result<Built> {
        let entry = self.entry()?;
        if let Some(p) = [Param::Weights, Param::Scale, Param::Density, Param::Seed]
            .into_iter()
            .find(|p| p.given(&self.params) && !entry.params.contains(p))
        {
            return Err(Error::invalid(format!(
                "merge method `{}` takes no {}",
                entry.name,
                p.name()
            )));
        }
        match (entry.base, base) {
            (true, false) => {
                return Err(Error::invalid(format!(
                    "merge method `{}` needs a base model",
                    entry.name
                )))
            }
            (false, true) => {
                return Err(Error::invalid(format!(
                    "merge method `{}` takes no base model",
                    entry.name
                )))
            }
            _ => {}
        }
        if candidates == 0 {
            return Err(Error::invalid("nothing to merge"));
        }
        (entry.build)(&self.params, candidates)
    }
}

/// One method of the registry: its name, the inputs and parameters it
/// takes, and how it is built.
#[derive(Debug)]
pub struct MethodEntry {
    /// The method's name (`soup merge --method NAME`).
    pub name: &'static str,
    /// One line saying what it does.
    pub summary: &'static str,
    /// Whether it combines task vectors against a base model (which is
    /// then required), rather than the candidates themselves.
    pub base: bool,
    /// The parameters it takes.
    pub params: &'static [Param],
    pub(crate) build: fn(&MethodParams, usize) -> Result<Built>,
}

/// Every merge method, by name.
pub static METHODS: &[MethodEntry] = &[
    mean::UNIFORM,
    mean::WEIGHTED,
    task_arithmetic::ENTRY,
    ties::ENTRY,
    dare::LINEAR,
    dare::TIES,
];

/// A method ready to run: its kernel and the candidates' weights (for the
/// report and the recipe).
pub(crate) struct Built {
    pub(crate) kernel: Box<dyn Kernel>,
    pub(crate) weights: Vec<f64>,
}

/// A per-tensor statistic a method needs before it combines (the
/// pre-pass, see [`super::prepass`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Statistic {
    /// Per candidate, the smallest task-vector magnitude among the
    /// `density` share of largest ones (the trim of TIES).
    TopMagnitude { density: f64 },
    /// Per candidate, the factor that gives the entries DARE keeps the L1
    /// norm of the whole task vector (mergekit's rescaling).
    DareRescale { density: f64, seed: u64 },
}

/// One block of a tensor, in every input, as a kernel sees it.
pub(crate) struct Block<'b> {
    /// The element type of the inputs.
    pub(crate) in_type: FloatType,
    /// The base's values (task-vector methods).
    pub(crate) base: Option<&'b [u8]>,
    /// Each candidate's values.
    pub(crate) candidates: &'b [&'b [u8]],
    /// The index of the block's first element in its tensor.
    pub(crate) start: usize,
    /// A hash of the tensor's name (for per-element random streams).
    pub(crate) name_key: u64,
    /// The pre-pass result per candidate (empty without a pre-pass).
    pub(crate) thresholds: &'b [f32],
}

/// How one block of every input's values becomes the output's block. The
/// two entry points are one generic function in each method (the
/// accumulator is f32, or f64 for F64 tensors).
pub(crate) trait Kernel: Send + Sync {
    /// The statistic to gather before combining, if any.
    fn statistic(&self) -> Option<Statistic> {
        None
    }
    /// Combines the block into `acc` (one slot per element), using
    /// `scratch` as it likes.
    fn combine_f32(&self, block: &Block, acc: &mut [f32], scratch: &mut Vec<f32>);
    /// [`Kernel::combine_f32`] for f64.
    fn combine_f64(&self, block: &Block, acc: &mut [f64], scratch: &mut Vec<f64>);
}

/// Dispatches to the kernel entry point of an accumulator type.
pub(crate) trait KernelAcc:
    crate::dtype::Accumulator + std::ops::Div<Output = Self>
{
    /// Runs `kernel` on `block`.
    fn combine(kernel: &dyn Kernel, block: &Block, acc: &mut [Self], scratch: &mut Vec<Self>);
}

impl KernelAcc for f32 {
    fn combine(kernel: &dyn Kernel, block: &Block, acc: &mut [f32], scratch: &mut Vec<f32>) {
        kernel.combine_f32(block, acc, scratch)
    }
}

impl KernelAcc for f64 {
    fn combine(kernel: &dyn Kernel, block: &Block, acc: &mut [f64], scratch: &mut Vec<f64>) {
        kernel.combine_f64(block, acc, scratch)
    }
}

/// Implements both kernel entry points of a type with a generic
/// `combine::<A>` method.
macro_rules! kernel_entry_points {
    () => {
        fn combine_f32(
            &self,
            block: &$crate::merge::method::Block,
            acc: &mut [f32],
            scratch: &mut Vec<f32>,
        ) {
            self.combine(block, acc, scratch)
        }
        fn combine_f64(
            &self,
            block: &$crate::merge::method::Block,
            acc: &mut [f64],
            scratch: &mut Vec<f64>,
        ) {
            self.combine(block, acc, scratch)
        }
    };
}
pub(crate) use kernel_entry_points;
