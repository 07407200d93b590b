//! Greedy soups (Wortsman et al., 2022, as SMS uses them): rank candidates
//! by score, start from the best, and add each next one only if the soup of
//! the chosen ones plus it scores at least as well (or strictly better).
//!
//! Scores come from a [`Scorer`]: an external command ([`CommandScorer`],
//! `soup merge --greedy --eval-cmd`) or any program's own evaluation (the
//! trainer scores in-process, after recalibrating normalization
//! statistics). Trial soups are written to a temporary folder beside the
//! output and removed whatever happens; the output is the uniform soup of
//! the chosen candidates, written by [`merge()`](crate::merge()) with the
//! trials recorded in its recipe.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::merge::{merge, MergeMethod, MergeOptions, MergeReport};
use crate::stream::Control;

/// Scores a checkpoint: higher is better.
pub trait Scorer {
    /// The score of the checkpoint at `path` (a file or sharded folder).
    fn score(&mut self, path: &Path) -> Result<f64>;
}

impl<F: FnMut(&Path) -> Result<f64>> Scorer for F {
    fn score(&mut self, path: &Path) -> Result<f64> {
        self(path)
    }
}

/// Scores by running a shell command (`sh -c`) in which `{}` stands for the
/// checkpoint path (shell-quoted; appended when there is no `{}`). The last
/// non-empty line the command prints on standard output must be a finite
/// number. Its standard error passes through.
///
/// The command runs in a process group of its own. With an interrupt flag
/// ([`CommandScorer::interrupt_on`]), the scorer stops waiting once the
/// flag is set: it sends SIGTERM to the command's whole group, SIGKILL
/// after a grace period of two seconds, reaps it and returns
/// [`Error::Interrupted`]. So a SIGTERM sent to soup alone (by `kill`, or
/// a Ctrl-C, which the terminal no longer delivers to the command's own
/// group) ends the evaluation too, instead of waiting for it.
#[derive(Debug, Clone)]
pub struct CommandScorer {
    template: String,
    interrupt: Option<&'static AtomicBool>,
}

/// How long an interrupted evaluator gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// How often a running evaluator is polled for its end or an interrupt.
const POLL: Duration = Duration::from_millis(20);

impl CommandScorer {
    /// A scorer for `template`, e.g. `python eval.py --checkpoint {}`.
    pub fn new(template: impl Into<String>) -> Result<CommandScorer> {
        let template = template.into();
        if template.trim().is_empty() {
            return Err(Error::invalid("the evaluation command is empty"));
        }
        Ok(CommandScorer {
            template,
            interrupt: None,
        })
    }

    /// Stops a running evaluation when `flag` is set (see the type's
    /// documentation).
    pub fn interrupt_on(mut self, flag: &'static AtomicBool) -> CommandScorer {
        self.interrupt = Some(flag);
        self
    }

    fn interrupted(&self) -> bool {
        self.interrupt.is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// The command line for `path`.
    pub fn command_line(&self, path: &Path) -> String {
        let quoted = shell_quote(&path.display().to_string());
        if self.template.contains("{}") {
            self.template.replace("{}", &quoted)
        } else {
            format!("{} {quoted}", self.template)
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Sends `signal` to the process group `group`.
fn signal_group(group: u32, signal: libc::c_int) {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return;
    };
    // SAFETY: kill(2) with a negative PID signals that process group; it
    // touches no memory of this process.
    unsafe { libc::kill(-group, signal) };
}

/// Ends the process group led by `child`: SIGTERM, SIGKILL after
/// [`GRACE`], then reaps the leader.
fn stop_group(child: &mut Child) {
    let group = child.id();
    signal_group(group, libc::SIGTERM);
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(POLL);
    }
    // Also the members that outlive the leader; the leader is not reaped
    // yet or just was, so the group's number is not reused meanwhile.
    signal_group(group, libc::SIGKILL);
    let _ = child.wait();
}

impl Scorer for CommandScorer {
    fn score(&mut self, path: &Path) -> Result<f64> {
        use std::io::Read;
        use std::os::unix::process::CommandExt;
        let line = self.command_line(path);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::Evaluator(format!("cannot run `{line}`: {e}")))?;
        let mut stdout = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            stdout.read_to_end(&mut bytes).map(|_| bytes)
        });
        let status = loop {
            if self.interrupted() {
                stop_group(&mut child);
                // The reader ends when the group's last member is gone;
                // one that left the group may hold the pipe: not waited for.
                drop(reader);
                return Err(Error::Interrupted);
            }
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => {
                    stop_group(&mut child);
                    return Err(Error::Evaluator(format!("cannot wait for `{line}`: {e}")));
                }
            }
        };
        let stdout = reader
            .join()
            .expect("the reader does not panic")
            .map_err(|e| Error::Evaluator(format!("cannot read the output of `{line}`: {e}")))?;
        if !status.success() {
            return Err(Error::Evaluator(format!("`{line}` failed ({status})")));
        }
        let text = String::from_utf8_lossy(&stdout);
        let last = text.lines().rev().find(|l| !l.trim().is_empty());
        let Some(last) = last else {
            return Err(Error::Evaluator(format!(
                "`{line}` printed nothing; its last line must be a number"
            )));
        };
        match last.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(Error::Evaluator(format!(
                "`{line}` printed `{}` on its last line, not a finite number",
                last.trim()
            ))),
        }
    }
}

/// Parameters of a greedy soup.
#[derive(Debug, Clone, Default)]
pub struct GreedyOptions {
    /// Keep a candidate only if the score strictly improves (model soups);
    /// by default ties are accepted (SMS).
    pub strict: bool,
    /// First-round scores of the candidates, in input order, instead of
    /// scoring each candidate.
    pub scores: Option<Vec<f64>>,
    /// How trial soups and the output are merged (mask and integer policies,
    /// dtype, output options). `method` must be uniform.
    pub merge: MergeOptions,
}

impl GreedyOptions {
    /// Checks the options for `candidates` candidates before any file is
    /// opened (as [`greedy_soup`] does): at least one candidate, a uniform
    /// merge whose options fit, and one finite score per candidate when
    /// scores are given.
    pub fn validate(&self, candidates: usize) -> Result<()> {
        if candidates == 0 {
            return Err(Error::invalid("greedy soup needs at least one candidate"));
        }
        if self.merge.method != MergeMethod::uniform() {
            return Err(Error::invalid(
                "greedy soups are uniform: weights are not allowed",
            ));
        }
        self.merge.validate(candidates, false)?;
        if let Some(scores) = &self.scores {
            if scores.len() != candidates {
                return Err(Error::invalid(format!(
                    "{} scores given for {candidates} candidates",
                    scores.len(),
                )));
            }
            if let Some(bad) = scores.iter().find(|s| !s.is_finite()) {
                return Err(Error::invalid(format!("scores must be finite, got {bad}")));
            }
        }
        Ok(())
    }
}

/// One step of the greedy soup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trial {
    /// The candidate tried (the first trial is the best candidate alone).
    pub candidate: PathBuf,
    /// Its first-round score.
    pub candidate_score: f64,
    /// The score of the soup of the chosen candidates plus this one.
    pub score: f64,
    /// Whether it was kept.
    pub kept: bool,
}

/// The outcome of a greedy soup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreedyReport {
    /// Every trial, in the order tried (best candidate first).
    pub trials: Vec<Trial>,
    /// The candidates in the soup, in the order they were added.
    pub chosen: Vec<PathBuf>,
    /// The soup's score (that of the last kept trial).
    pub score: f64,
    /// Whether ties were rejected.
    pub strict: bool,
    /// Whether the first-round scores were given rather than computed.
    pub scores_given: bool,
    /// The final merge.
    pub merge: MergeReport,
}

/// Builds the greedy soup of `candidates` into `target`. See the module
/// documentation.
pub fn greedy_soup(
    candidates: &[Checkpoint],
    target: &Path,
    scorer: &mut dyn Scorer,
    options: &GreedyOptions,
    control: &Control,
) -> Result<GreedyReport> {
    options.validate(candidates.len())?;
    let inputs: Vec<&Path> = candidates
        .iter()
        .flat_map(|c| c.files_with_index())
        .collect();
    crate::output::check_target(target, &inputs, options.merge.output.force)?;
    // Everything the candidates share is checked before any evaluation.
    crate::checkpoint::align(&candidates.iter().collect::<Vec<_>>())?;

    let mut score = |path: &Path, control: &Control| -> Result<f64> {
        control.check()?;
        scorer.score(path).map_err(|e| {
            // A Ctrl-C also kills the evaluator: report the interrupt.
            if control.check().is_err() {
                Error::Interrupted
            } else {
                e
            }
        })
    };
    let first: Vec<f64> = match &options.scores {
        Some(s) => s.clone(),
        None => candidates
            .iter()
            .map(|c| score(c.path(), control))
            .collect::<Result<_>>()?,
    };
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    // Stable: equal scores keep the input order.
    order.sort_by(|&a, &b| first[b].total_cmp(&first[a]));

    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    crate::safety::sweep_stale_temps(parent);
    let scratch = tempfile::Builder::new()
        .prefix(&crate::safety::own_prefix(crate::safety::GREEDY_PREFIX))
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, "cannot create trial folder in", e))?;
    // Before any trial file in it: a bus error removes the files first,
    // then this folder. Declared after `scratch`, so dropped before it.
    let scratch_guard = crate::safety::TempGuard::folder(scratch.path());
    let trial_options = MergeOptions {
        output: Default::default(),
        recipe_extra: Default::default(),
        ..options.merge.clone()
    };

    let best = order[0];
    let mut chosen = vec![best];
    let mut current = first[best];
    let mut trials = vec![Trial {
        candidate: candidates[best].path().to_path_buf(),
        candidate_score: first[best],
        score: first[best],
        kept: true,
    }];
    for (step, &c) in order.iter().enumerate().skip(1) {
        control.check()?;
        // Every trial and the soup merge the files that were scored: a
        // candidate rewritten or replaced meanwhile stops the run.
        for &i in chosen.iter().chain([&c]) {
            candidates[i].check_unchanged()?;
        }
        let opened: Vec<Checkpoint> = chosen
            .iter()
            .chain([&c])
            .map(|&i| Checkpoint::open(candidates[i].path()))
            .collect::<Result<_>>()?;
        let path = scratch.path().join(format!("trial-{step}.safetensors"));
        merge(&opened, &path, &trial_options, control)?;
        let s = score(&path, control)?;
        let _ = std::fs::remove_file(&path);
        let kept = if options.strict {
            s > current
        } else {
            s >= current
        };
        if kept {
            chosen.push(c);
            current = s;
        }
        trials.push(Trial {
            candidate: candidates[c].path().to_path_buf(),
            candidate_score: first[c],
            score: s,
            kept,
        });
    }

    let mut final_options = options.merge.clone();
    final_options.recipe_extra.insert(
        "greedy".into(),
        serde_json::json!({
            "strict": options.strict,
            "scores_given": options.scores.is_some(),
            "trials": trials,
            "score": current,
        }),
    );
    for &i in &chosen {
        candidates[i].check_unchanged()?;
    }
    let soup: Vec<Checkpoint> = chosen
        .iter()
        .map(|&i| Checkpoint::open(candidates[i].path()))
        .collect::<Result<_>>()?;
    let report = merge(&soup, target, &final_options, control)?;
    drop(scratch_guard);
    drop(scratch);
    Ok(GreedyReport {
        chosen: chosen
            .iter()
            .map(|&i| candidates[i].path().to_path_buf())
            .collect(),
        trials,
        score: current,
        strict: options.strict,
        scores_given: options.scores.is_some(),
        merge: report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_quote_the_path() {
        let s = CommandScorer::new("eval --ckpt {} --fast").unwrap();
        assert_eq!(
            s.command_line(Path::new("a b/it's.safetensors")),
            r"eval --ckpt 'a b/it'\''s.safetensors' --fast"
        );
        let s = CommandScorer::new("eval").unwrap();
        assert_eq!(s.command_line(Path::new("x")), "eval 'x'");
    }

    #[test]
    fn scorer_reads_the_last_line_and_reports_failures() {
        let mut ok = CommandScorer::new("printf 'log\\n0.75\\n\\n' #").unwrap();
        assert_eq!(ok.score(Path::new("x")).unwrap(), 0.75);
        let mut fails = CommandScorer::new("exit 3 #").unwrap();
        let e = fails.score(Path::new("x")).unwrap_err().to_string();
        assert!(e.contains("failed") && e.contains('3'), "{e}");
        let mut words = CommandScorer::new("echo accuracy #").unwrap();
        let e = words.score(Path::new("x")).unwrap_err().to_string();
        assert!(e.contains("not a finite number"), "{e}");
        let mut silent = CommandScorer::new("true #").unwrap();
        let e = silent.score(Path::new("x")).unwrap_err().to_string();
        assert!(e.contains("printed nothing"), "{e}");
    }

    #[test]
    fn an_interrupt_ends_the_evaluators_whole_group() {
        static STOP: AtomicBool = AtomicBool::new(false);
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // The shell stays (two commands), its child sleeps: both must go.
        let template = format!("sleep 30 & echo $! > '{}'; wait #", pid_file.display());
        let mut scorer = CommandScorer::new(template).unwrap().interrupt_on(&STOP);
        let watched = pid_file.clone();
        let setter = std::thread::spawn(move || {
            while std::fs::read_to_string(&watched).map_or(true, |t| !t.ends_with('\n')) {
                std::thread::sleep(Duration::from_millis(10));
            }
            STOP.store(true, Ordering::Relaxed);
        });
        let started = Instant::now();
        let e = scorer.score(Path::new("x")).unwrap_err();
        setter.join().unwrap();
        assert!(matches!(e, Error::Interrupted), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let sleeper = std::fs::read_to_string(&pid_file).unwrap();
        // Gone, or a zombie waiting for a parent that does not reap. A
        // killed process dies when the kernel next schedules it, which on
        // a loaded machine can be a moment after kill(2) returns: allow
        // two seconds (the sleeper would otherwise live for 30).
        let ended = || {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", sleeper.trim()));
            stat.map_or(true, |s| {
                s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z')
            })
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !ended() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            ended(),
            "the evaluator's child {} still runs",
            sleeper.trim()
        );
    }
}
