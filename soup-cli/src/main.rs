//! `soup`: checkpoint surgery and sparse model souping for safetensors files.
//!
//! The binary only parses arguments and dispatches; the work lives in
//! soup-core. Exit codes: 0 success (and, for comparisons, no differences),
//! 1 findings (masks or checkpoints differ), 2 errors, 130 interrupted.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod output;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Most worker threads per available core: more only adds overhead, and
/// a typo such as `--threads 100000` would otherwise spend minutes
/// creating threads.
const THREADS_PER_CORE: usize = 16;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // SIGINT, SIGTERM and SIGHUP (what timeout, systemd and Slurm send)
    // all stop the run at the next window; the outputs' temporary files are
    // removed as the work unwinds.
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::Relaxed));
    soup_core::install_sigbus_handler("soup: error: ");
    if let Some(threads) = args.global.threads {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let limit = THREADS_PER_CORE * cores;
        if threads > limit {
            eprintln!(
                "soup: error: --threads {threads} is more than {THREADS_PER_CORE} per available core \
                 ({cores} cores): use at most {limit}"
            );
            return ExitCode::from(2);
        }
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global();
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let ctx = output::Context::new(&args.global, &INTERRUPTED);
    let result = commands::run(args.command, &mut out, &ctx);
    let flushed = out.flush();
    match result {
        Ok(outcome) => ExitCode::from(outcome as u8),
        Err(e) if is_interrupted(&e) => {
            eprintln!("soup: interrupted; nothing was written");
            ExitCode::from(130)
        }
        // A closed pipe (`soup inspect x | head`) is not an error.
        Err(e)
            if is_broken_pipe(&e)
                || flushed
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let hint = match e.downcast_ref::<soup_core::Error>() {
                Some(soup_core::Error::OutputExists { .. }) => " (use --force to replace it)",
                Some(soup_core::Error::NotReplaceable { .. }) => " (not even with --force)",
                Some(soup_core::Error::MasksDiffer { .. }) => {
                    "; see `soup check-mask`, or merge anyway with --mask-policy union|intersect (base|none with --base)"
                }
                Some(soup_core::Error::IntegersDiffer { .. }) => {
                    " (use --int-policy first to take the first input's)"
                }
                Some(soup_core::Error::NotAPair {
                    kind: soup_core::PairKind::Rename,
                    ..
                }) => " (in --rename)",
                Some(soup_core::Error::NotAPair {
                    kind: soup_core::PairKind::Metadata,
                    ..
                }) => " (in --set-meta)",
                Some(soup_core::Error::CastTypeMissing) => {
                    " (--only limits --cast, which is missing)"
                }
                Some(soup_core::Error::CastNotFloat { .. }) => " (in --cast)",
                Some(soup_core::Error::OutputIsFolder { .. }) => {
                    "; write a single file elsewhere, or shards into it with --shard-size"
                }
                Some(soup_core::Error::ShardSizeZero) => " (in --shard-size)",
                Some(soup_core::Error::NotInMask { .. }) => " (leave it out with --exclude)",
                Some(soup_core::Error::PatternBroken { .. }) => {
                    "; see `soup check-mask --nm`, or keep the inputs' shared mask \
                     (--mask-policy refuse or intersect)"
                }
                _ => "",
            };
            eprintln!(
                "soup: error: {}{hint}",
                output::escape_controls(&dedup_chain(&chain))
            );
            ExitCode::from(2)
        }
    }
}

fn is_interrupted(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<soup_core::Error>(),
        Some(soup_core::Error::Interrupted)
    )
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Joins an error chain on one line, dropping causes already quoted by the
/// message above them.
fn dedup_chain(chain: &[String]) -> String {
    let mut line = String::new();
    for part in chain {
        if line.contains(part.as_str()) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(part);
    }
    line.replace('\n', " ")
}
