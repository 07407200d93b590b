//! The library's one error type, grouped by the stage that fails.

use std::path::PathBuf;

/// Everything the trainer library can fail with. Variants carry the file or
/// the name involved so that a message alone says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- data -------------------------------------------------------------
    /// A data folder or file is missing, unreadable or malformed.
    #[error("data {path}: {msg}")]
    Data {
        /// The folder or file that is wrong.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// An image file of an image folder that cannot be read or decoded.
    #[error("image {path}: {msg}")]
    BadImage {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A data set name that is neither known nor an existing folder.
    #[error(
        "unknown data set {0:?}: give `fashion-mnist`, a folder of IDX or CIFAR binary files, or an image folder"
    )]
    UnknownData(String),

    // --- robustness ---------------------------------------------------------
    /// A corruption name that the trainer does not generate.
    #[error(
        "unknown corruption {0:?}: expected all, none or names from gaussian_noise, shot_noise, \
         impulse_noise, speckle_noise, gaussian_blur, defocus_blur, glass_blur, zoom_blur, \
         contrast, brightness, saturate, pixelate, fog"
    )]
    UnknownCorruption(String),
    /// A corruption severity outside 1 to 5.
    #[error("bad corruption severity {0:?}: expected 1 to 5, a comma-separated list, or all")]
    BadSeverity(String),
    /// A colour-only corruption asked of a grey data set.
    #[error("corruption {corruption} changes colour, but data set {data} is grey")]
    GreyCorruption {
        /// The corruption's name.
        corruption: String,
        /// The data set.
        data: String,
    },

    // --- models and checkpoints -------------------------------------------
    /// A model name that is not one of the architectures the trainer builds.
    #[error(
        "unknown model {0:?}: expected mlp, cnn, resnet20, resnet56, wrn-D-W, wrn-D-W-ref, resnet18 or resnet50"
    )]
    UnknownModel(String),
    /// A checkpoint that cannot be read or does not fit the model.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What does not fit.
        msg: String,
    },

    // --- configuration ----------------------------------------------------
    /// An invalid setting (bad value, unreadable config file, bad device).
    #[error("config: {0}")]
    Config(String),

    // --- plumbing ---------------------------------------------------------
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint operation of soup-core (pruning, mask check, merge).
    #[error(transparent)]
    Soup(#[from] soup_core::Error),
    /// A sparse-model-soup run cannot go on (a missing step, a failed
    /// mask check, a failed child job).
    #[error("run: {0}")]
    Run(String),
    /// A Slurm command (sbatch, squeue) that could not run or failed.
    #[error("slurm: `{command}`: {msg}")]
    Slurm {
        /// The command line, shortened to the program and its subcommand.
        command: String,
        /// What went wrong (the command's own message where it gave one).
        msg: String,
    },
    /// Steps of a run submitted to a cluster failed or were cancelled; the
    /// run folder keeps everything that finished.
    #[error(
        "run {}: {} did not finish: {}; fix the cause and submit the same command again to \
         finish the run",
        run.display(),
        if failed.len() == 1 { "a step" } else { "steps" },
        failed.join("; ")
    )]
    StepsFailed {
        /// The run folder.
        run: PathBuf,
        /// Each failed step with its job and log.
        failed: Vec<String>,
    },
    /// Jobs of a run are still queued or running, so submitting it again
    /// would run its steps twice.
    #[error(
        "run {}: jobs {} are still queued or running; wait for them or cancel them with scancel",
        run.display(),
        jobs.join(", ")
    )]
    JobsInQueue {
        /// The run folder.
        run: PathBuf,
        /// The live jobs.
        jobs: Vec<String>,
    },
    /// An error raised by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl Error {
    pub(crate) fn data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub(crate) fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
