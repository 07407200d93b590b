//! Souping: the candidates of a phase checked to share the parent's mask,
//! merged uniformly or greedily through soup-core, recalibrated and
//! evaluated, with their prediction ensemble and how often they disagree;
//! and IMP-RePrune's average of independent IMP chains.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pipeline::checkpoint_ops;
use crate::pipeline::SoupKind;
use crate::sms::layout::Chain;
use crate::sms::records::{CandidateInfo, PhaseInfo, PruneInfo};
use crate::sms::session::{mkdir, read_json, write_json, Session};

impl Session {
    /// Checks the candidates' masks against the parent, merges them
    /// (uniformly or greedily) through soup-core, recalibrates batch norm and
    /// evaluates the soup.
    pub fn soup(&self, phase: u32) -> Result<PhaseInfo> {
        let info_path = self.layout.phase_info(Chain::Soup, phase);
        if info_path.exists() {
            return read_json(&info_path);
        }
        let prune: PruneInfo = read_json(&self.layout.prune_info(Chain::Soup, phase))?;
        let m = self.cfg.soups.candidates;
        let mut candidates = Vec::with_capacity(m as usize);
        let mut paths = Vec::with_capacity(m as usize);
        for i in 0..m {
            let (path, info) = self.candidate_path(Chain::Soup, phase, i);
            if !path.exists() || !info.exists() {
                return Err(Error::Run(format!(
                    "{} is missing: run `trainer sms --out {} --step candidate:{phase}:{i}` first",
                    path.display(),
                    self.layout.root.display()
                )));
            }
            candidates.push(read_json::<CandidateInfo>(&info)?);
            paths.push(path);
        }
        let parent = self.layout.parent(Chain::Soup, phase);
        checkpoint_ops::check_masks(&paths, &parent, &self.ws.pruned)?;
        let avg = self.layout.soup_avg(Chain::Soup, phase);
        let (chosen, trials) = match self.cfg.soups.soup {
            SoupKind::Uniform => {
                checkpoint_ops::merge(&paths, &avg)?;
                ((0..m).collect(), Vec::new())
            }
            SoupKind::Greedy => {
                let first: Vec<f64> = candidates.iter().map(|c| c.eval.val.top1).collect();
                checkpoint_ops::greedy(&paths, &first, &avg, self.cfg.soups.strict, |p| {
                    self.ws.score(p)
                })?
            }
        };
        let soup_path = self.layout.soup(Chain::Soup, phase);
        let soup = self.ws.finish(&self.ws.load(&avg)?, &soup_path)?;
        let (ensemble, disagreement) = self.ws.evaluate_ensemble(&paths, &candidates[0].eval)?;
        let geometry = checkpoint_ops::geometry(&paths)?.map(|mut g| {
            for p in &mut g.inputs {
                if let Ok(rel) = p.strip_prefix(&self.layout.root) {
                    *p = rel.to_path_buf();
                }
            }
            g
        });
        let soup_path = soup_path
            .strip_prefix(&self.layout.root)
            .map_or(soup_path.clone(), Path::to_path_buf);
        let info = PhaseInfo {
            phase,
            target_sparsity: self.cfg.target_sparsity(phase),
            prune,
            candidates,
            masks_identical: true,
            chosen,
            trials,
            soup,
            ensemble,
            soup_path,
            geometry,
            disagreement,
        };
        self.ws.say(format!(
            "sms phase {phase} soup of {:?}: val {:.4}, test {:.4}, sparsity {:.2}%",
            info.chosen,
            info.soup.val.top1,
            info.soup.test.top1,
            100.0 * info.soup.sparsity
        ));
        write_json(&info_path, &info)?;
        Ok(info)
    }

    /// IMP-RePrune at `phase`: the average of the M IMP chains (their masks
    /// differ, so the union), re-pruned to the phase's target and retrained.
    pub fn reprune(&self, phase: u32) -> Result<CandidateInfo> {
        let chains: Vec<PathBuf> = (0..self.cfg.soups.candidates)
            .map(|j| self.candidate_path(Chain::Imp(j), phase, 0).0)
            .collect();
        let avg = self.layout.soup_avg(Chain::Reprune, phase);
        if !avg.exists() {
            mkdir(avg.parent().expect("phase folder"))?;
            checkpoint_ops::merge(&chains, &avg)?;
        }
        self.prepare(Chain::Reprune, phase)?;
        self.candidate(Chain::Reprune, phase, 0)
    }
}
