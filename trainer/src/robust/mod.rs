//! Robustness out of distribution: accuracy on the test split under
//! corruptions, generated deterministically in Rust ([`Corruption`]) or read
//! from the official CIFAR-10-C / CIFAR-100-C folders.
//!
//! [`evaluate_ood`] is the one entry point: it evaluates the clean test split
//! and every chosen corruption at every chosen severity, and reports each
//! accuracy and their mean (`ood_acc`). The corrupted images are made (or
//! read) one batch at a time, so memory does not grow with the number of
//! corruptions or the size of the test split; the work per image is small
//! next to a forward pass and spread over the CPU cores.
//!
//! [`OodArgs`] is the command-line form (`--corruptions`, `--severity`,
//! `--ood`, `--ood-limit`) shared by the commands that evaluate.

pub mod cifar_c;
pub mod corrupt;
mod filters;
mod noise;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::data::{Batch, Dataset, Split};
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalReport};
use crate::model::Model;

pub use corrupt::{Corruption, MAX_SEVERITY};

/// The severity evaluated by default, as in the reference code.
pub const DEFAULT_SEVERITY: u8 = 3;

/// Which corruptions to evaluate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CorruptionChoice {
    /// None: no robustness evaluation.
    None,
    /// Every generated corruption that applies to the data set's images
    /// (saturation needs colour), or every `.npy` file of the folder.
    All,
    /// These corruptions, by name (`gaussian_noise`, `fog`, ...).
    Named(Vec<String>),
}

impl std::str::FromStr for CorruptionChoice {
    type Err = Error;

    /// Parses `all`, `none` or a comma-separated list of names.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "all" => Ok(CorruptionChoice::All),
            "none" => Ok(CorruptionChoice::None),
            list => {
                let names: Vec<String> = list
                    .split(',')
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect();
                if names.is_empty() {
                    return Err(Error::UnknownCorruption(s.to_string()));
                }
                Ok(CorruptionChoice::Named(names))
            }
        }
    }
}

/// What robustness evaluation to run: which corruptions at which severities,
/// generated or read from a CIFAR-10-C style folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OodSpec {
    /// The corruptions.
    pub corruptions: CorruptionChoice,
    /// Severities, each 1 to 5, in increasing order.
    pub severities: Vec<u8>,
    /// A folder of `<corruption>.npy` files and `labels.npy` (CIFAR-10-C or
    /// CIFAR-100-C) to read instead of generating corruptions.
    pub dir: Option<PathBuf>,
    /// Evaluate corruptions on the first this many test images (or rows of
    /// each severity) only; `None` takes all of them.
    pub limit: Option<usize>,
}

impl Default for OodSpec {
    /// Every corruption at severity 3, generated, on the whole test split.
    fn default() -> Self {
        OodSpec {
            corruptions: CorruptionChoice::All,
            severities: vec![DEFAULT_SEVERITY],
            dir: None,
            limit: None,
        }
    }
}

impl OodSpec {
    /// No robustness evaluation.
    pub fn none() -> Self {
        OodSpec {
            corruptions: CorruptionChoice::None,
            ..OodSpec::default()
        }
    }

    /// True when nothing is to be evaluated.
    pub fn is_none(&self) -> bool {
        self.corruptions == CorruptionChoice::None
    }

    /// Checks what can be checked without the data: known names (when
    /// generating), severities 1 to 5, a positive limit.
    pub fn validate(&self) -> Result<()> {
        if self.is_none() {
            return Ok(());
        }
        if self.severities.is_empty() {
            return Err(Error::BadSeverity(String::new()));
        }
        if let Some(&s) = self
            .severities
            .iter()
            .find(|&&s| s == 0 || s > MAX_SEVERITY)
        {
            return Err(Error::BadSeverity(s.to_string()));
        }
        if self.limit == Some(0) {
            return Err(Error::Config(
                "a robustness subset of 0 test images evaluates nothing".into(),
            ));
        }
        if let (None, CorruptionChoice::Named(names)) = (&self.dir, &self.corruptions) {
            for n in names {
                Corruption::from_name(n).ok_or_else(|| Error::UnknownCorruption(n.clone()))?;
            }
        }
        Ok(())
    }
}

/// Parses a severity flag: `1` to `5`, a comma-separated list, or `all`.
pub fn parse_severities(s: &str) -> Result<Vec<u8>> {
    if s.trim() == "all" {
        return Ok((1..=MAX_SEVERITY).collect());
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        match part.trim().parse::<u8>() {
            Ok(v) if (1..=MAX_SEVERITY).contains(&v) => out.push(v),
            _ => return Err(Error::BadSeverity(part.trim().to_string())),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// What a robustness evaluation measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OodReport {
    /// Top-1 accuracy on the clean test split.
    pub test_acc: f64,
    /// The mean of the accuracies in `corruptions` (every corruption and
    /// severity weighs the same); `None` when nothing was evaluated.
    pub ood_acc: Option<f64>,
    /// Top-1 accuracy per corruption and severity.
    #[serde(deserialize_with = "severity_maps")]
    pub corruptions: BTreeMap<String, BTreeMap<u8, f64>>,
}

/// Reads `{name: {severity: accuracy}}` whose severities are JSON object
/// keys, hence strings, also where serde buffers the object first (inside
/// a flattened struct such as [`EvalSummary`]), which cannot parse string
/// keys as integers by itself.
fn severity_maps<'de, D>(d: D) -> std::result::Result<BTreeMap<String, BTreeMap<u8, f64>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw = BTreeMap::<String, BTreeMap<String, f64>>::deserialize(d)?;
    raw.into_iter()
        .map(|(name, per)| {
            let per = per
                .into_iter()
                .map(|(s, acc)| {
                    s.parse::<u8>().map(|s| (s, acc)).map_err(|_| {
                        serde::de::Error::custom(format!("severity {s:?} of {name} is not 1 to 5"))
                    })
                })
                .collect::<std::result::Result<_, _>>()?;
            Ok((name, per))
        })
        .collect()
}

/// The clean test report and the robustness report in one JSON object, as
/// `trainer eval --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// Loss, top-1, balanced accuracy and calibration on the clean test split.
    #[serde(flatten)]
    pub test: EvalReport,
    /// Accuracy under corruptions.
    #[serde(flatten)]
    pub ood: OodReport,
}

/// Evaluates `model` on the clean test split of `data` and under the
/// corruptions of `spec`, in batches of `batch_size`.
pub fn evaluate_ood(
    model: &Model,
    data: &Dataset,
    spec: &OodSpec,
    device: Device,
    batch_size: i64,
) -> Result<OodReport> {
    let bs = batch_size.max(1) as usize;
    let test_acc = evaluate(model, data.eval_batches(Split::Test, bs, device))?.top1;
    let corruptions = corruption_accuracies(model, data, spec, device, batch_size)?;
    Ok(OodReport {
        test_acc,
        ood_acc: mean_accuracy(&corruptions),
        corruptions,
    })
}

/// The mean over every corruption and severity, `None` when empty.
pub fn mean_accuracy(corruptions: &BTreeMap<String, BTreeMap<u8, f64>>) -> Option<f64> {
    let all: Vec<f64> = corruptions
        .values()
        .flat_map(|s| s.values().copied())
        .collect();
    (!all.is_empty()).then(|| all.iter().sum::<f64>() / all.len() as f64)
}

/// The corrupted-data part of [`evaluate_ood`]: top-1 accuracy per
/// corruption and severity, without the clean test split (for callers that
/// evaluate that themselves).
pub fn corruption_accuracies(
    model: &Model,
    data: &Dataset,
    spec: &OodSpec,
    device: Device,
    batch_size: i64,
) -> Result<BTreeMap<String, BTreeMap<u8, f64>>> {
    spec.validate()?;
    let bs = batch_size.max(1) as usize;
    let mut out = BTreeMap::new();
    if spec.is_none() {
        return Ok(out);
    }
    match &spec.dir {
        None => {
            for c in generated(data, &spec.corruptions)? {
                let mut per = BTreeMap::new();
                for &s in &spec.severities {
                    let batches = GeneratedBatches::new(data, c, s, bs, spec.limit, device);
                    let acc = evaluate(model, batches)?.top1;
                    // An image folder's unreadable image ends the batches.
                    data.check()?;
                    per.insert(s, acc);
                }
                out.insert(c.name().to_string(), per);
            }
        }
        Some(dir) => {
            let labels_path = dir.join("labels.npy");
            let labels = cifar_c::read_labels(&labels_path)?;
            if let Some(&bad) = labels
                .iter()
                .find(|&&l| l < 0 || l as usize >= data.num_classes)
            {
                return Err(Error::data(
                    &labels_path,
                    format!(
                        "label {bad} is out of range for {} classes",
                        data.num_classes
                    ),
                ));
            }
            for (name, path) in folder_files(dir, &spec.corruptions)? {
                let file = cifar_c::CorruptionFile::open(&path, data.input_shape(), labels.len())?;
                let mut file = Some(file);
                let mut per = BTreeMap::new();
                for &s in &spec.severities {
                    let f = file
                        .take()
                        .expect("the file is handed back after each severity");
                    let mut batches = FileBatches::new(data, f, &labels, s, bs, spec.limit, device);
                    let acc = evaluate(model, &mut batches)?.top1;
                    if let Some(e) = batches.error.take() {
                        return Err(e);
                    }
                    file = Some(batches.file);
                    per.insert(s, acc);
                }
                out.insert(name, per);
            }
        }
    }
    Ok(out)
}

/// The test split of `data` under `corruption` at `severity` (0 to 5), in
/// batches of `batch_size`, over the first `limit` images (all with
/// `None`): the batches [`evaluate_ood`] evaluates, for callers that score
/// something other than one model (an ensemble of several).
pub fn corrupted_batches(
    data: &Dataset,
    corruption: Corruption,
    severity: u8,
    batch_size: usize,
    limit: Option<usize>,
    device: Device,
) -> impl Iterator<Item = Batch> + '_ {
    GeneratedBatches::new(data, corruption, severity, batch_size.max(1), limit, device)
}

/// The generated corruptions `choice` names for `data`.
fn generated(data: &Dataset, choice: &CorruptionChoice) -> Result<Vec<Corruption>> {
    let grey = data.input_shape()[0] == 1;
    match choice {
        CorruptionChoice::None => Ok(Vec::new()),
        CorruptionChoice::All => Ok(Corruption::ALL
            .into_iter()
            .filter(|c| !grey || c.applies_to_grey())
            .collect()),
        CorruptionChoice::Named(names) => names
            .iter()
            .map(|n| {
                let c =
                    Corruption::from_name(n).ok_or_else(|| Error::UnknownCorruption(n.clone()))?;
                if grey && !c.applies_to_grey() {
                    return Err(Error::GreyCorruption {
                        corruption: n.clone(),
                        data: data.name.clone(),
                    });
                }
                Ok(c)
            })
            .collect(),
    }
}

/// The `(name, path)` of each corruption file of a CIFAR-10-C folder that
/// `choice` names: all `.npy` files but `labels.npy`, or the named ones.
fn folder_files(dir: &Path, choice: &CorruptionChoice) -> Result<Vec<(String, PathBuf)>> {
    match choice {
        CorruptionChoice::None => Ok(Vec::new()),
        CorruptionChoice::All => {
            let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "npy"))
                .filter_map(|p| {
                    let stem = p.file_stem()?.to_str()?.to_string();
                    (stem != "labels").then_some((stem, p))
                })
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(Error::data(
                    dir,
                    "holds no <corruption>.npy files besides labels.npy",
                ));
            }
            Ok(files)
        }
        CorruptionChoice::Named(names) => names
            .iter()
            .map(|n| {
                let p = dir.join(format!("{n}.npy"));
                if p.is_file() {
                    Ok((n.clone(), p))
                } else {
                    Err(Error::data(&p, "no such corruption file"))
                }
            })
            .collect(),
    }
}

/// Batches of the test split under one generated corruption.
struct GeneratedBatches<'a> {
    data: &'a Dataset,
    corruption: Corruption,
    severity: u8,
    pos: usize,
    end: usize,
    batch_size: usize,
    device: Device,
}

impl<'a> GeneratedBatches<'a> {
    fn new(
        data: &'a Dataset,
        corruption: Corruption,
        severity: u8,
        batch_size: usize,
        limit: Option<usize>,
        device: Device,
    ) -> Self {
        let n = data.test.len();
        GeneratedBatches {
            data,
            corruption,
            severity,
            pos: 0,
            end: limit.map_or(n, |l| l.min(n)),
            batch_size,
            device,
        }
    }
}

impl Iterator for GeneratedBatches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.pos >= self.end {
            return None;
        }
        let (start, stop) = (self.pos, (self.pos + self.batch_size).min(self.end));
        self.pos = stop;
        let set = &self.data.test;
        let len = set.image_len();
        // The clean images as evaluation sees them: for an image folder,
        // decoded and resized to its image size, so corruptions apply at
        // the size the model sees.
        let (clean, labels) = match self.data.split_bytes(Split::Test, start, stop) {
            Ok(x) => x,
            Err(e) => {
                if let Some(f) = &self.data.folder {
                    f.record_error(e);
                }
                return None;
            }
        };
        let n = labels.len();
        let clean = &clean;
        let mut images = vec![0u8; n * len];
        // Images are independent (each has its own seed), so they are
        // corrupted in parallel without changing the result.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = n.div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for (k, chunk) in images.chunks_mut(per * len).enumerate() {
                let (c, s) = (self.corruption, self.severity);
                scope.spawn(move || {
                    for (j, out) in chunk.chunks_exact_mut(len).enumerate() {
                        let i = k * per + j;
                        let image = &clean[i * len..(i + 1) * len];
                        c.apply(s, image, set.shape, (start + i) as u64, out);
                    }
                });
            }
        });
        Some(self.data.batch_from_bytes(&images, &labels, self.device))
    }
}

/// Batches of the rows of one severity of a CIFAR-10-C file. A read error
/// ends the iteration and is kept in `error` for the caller.
struct FileBatches<'a> {
    data: &'a Dataset,
    file: cifar_c::CorruptionFile,
    labels: &'a [i64],
    pos: usize,
    end: usize,
    batch_size: usize,
    device: Device,
    buf: Vec<u8>,
    error: Option<Error>,
}

impl<'a> FileBatches<'a> {
    fn new(
        data: &'a Dataset,
        file: cifar_c::CorruptionFile,
        labels: &'a [i64],
        severity: u8,
        batch_size: usize,
        limit: Option<usize>,
        device: Device,
    ) -> Self {
        let per = file.per_severity();
        let pos = (severity as usize - 1) * per;
        FileBatches {
            data,
            file,
            labels,
            pos,
            end: pos + limit.map_or(per, |l| l.min(per)),
            batch_size,
            device,
            buf: Vec::new(),
            error: None,
        }
    }
}

impl Iterator for FileBatches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.pos >= self.end || self.error.is_some() {
            return None;
        }
        let (start, stop) = (self.pos, (self.pos + self.batch_size).min(self.end));
        self.pos = stop;
        if let Err(e) = self.file.read_images(start, stop - start, &mut self.buf) {
            self.error = Some(e);
            return None;
        }
        Some(
            self.data
                .batch_from_bytes(&self.buf, &self.labels[start..stop], self.device),
        )
    }
}

/// The robustness flags, for any command that evaluates. Every flag is
/// optional so that a command can lay them over a saved configuration
/// ([`OodArgs::apply`]); [`OodArgs::spec`] lays them over the defaults.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OodArgs {
    /// Corruptions of the test split to evaluate: all, none, or a
    /// comma-separated list (gaussian_noise, shot_noise, impulse_noise,
    /// speckle_noise, gaussian_blur, defocus_blur, glass_blur, zoom_blur,
    /// contrast, brightness, saturate, pixelate, fog) [default: all].
    ///
    /// With --ood, the names are those of the folder's .npy files and `all`
    /// takes every one of them.
    #[arg(long, value_name = "all|none|NAME,...")]
    pub corruptions: Option<String>,
    /// Corruption severity: 1 to 5, a comma-separated list, or all
    /// [default: 3].
    #[arg(long, value_name = "1..5|all")]
    pub severity: Option<String>,
    /// Read the corrupted test sets from a CIFAR-10-C or CIFAR-100-C folder
    /// (`<corruption>.npy` and `labels.npy`) instead of generating them.
    #[arg(long, value_name = "DIR")]
    pub ood: Option<PathBuf>,
    /// Evaluate corruptions on the first N test images only (a documented
    /// subset, for quick runs) [default: all].
    #[arg(long, value_name = "N")]
    pub ood_limit: Option<usize>,
}

impl OodArgs {
    /// The flags over the defaults ([`OodSpec::default`]), validated.
    pub fn spec(&self) -> Result<OodSpec> {
        self.apply(OodSpec::default())
    }

    /// The flags that were given over `base`, validated.
    pub fn apply(&self, mut base: OodSpec) -> Result<OodSpec> {
        if let Some(c) = &self.corruptions {
            base.corruptions = c.parse()?;
        }
        if let Some(s) = &self.severity {
            base.severities = parse_severities(s)?;
        }
        if let Some(d) = &self.ood {
            base.dir = Some(d.clone());
        }
        if let Some(n) = self.ood_limit {
            base.limit = Some(n);
        }
        base.validate()?;
        Ok(base)
    }
}

#[cfg(test)]
mod tests;
