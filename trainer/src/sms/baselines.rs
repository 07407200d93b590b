//! The baselines a soup is compared with (IMP, IMP with m-times longer
//! retraining, IMP delivering each phase's SWA average, IMP-RePrune), each
//! a chain of prune-retrain phases in `RUN/baselines/`.

use crate::error::Result;
use crate::sms::config::Baseline;
use crate::sms::layout::Chain;
use crate::sms::session::Session;

impl Session {
    /// Runs one baseline chain through every phase.
    pub fn baseline(&self, baseline: Baseline) -> Result<()> {
        for phase in 1..=self.cfg.phases {
            match baseline {
                Baseline::Imp | Baseline::ImpLong | Baseline::ImpSwa => {
                    let chain = baseline.chain();
                    self.prepare(chain, phase)?;
                    self.candidate(chain, phase, 0)?;
                }
                Baseline::Reprune => {
                    for j in 0..self.cfg.soups.candidates {
                        self.prepare(Chain::Imp(j), phase)?;
                        self.candidate(Chain::Imp(j), phase, 0)?;
                    }
                    self.reprune(phase)?;
                }
            }
        }
        Ok(())
    }
}
