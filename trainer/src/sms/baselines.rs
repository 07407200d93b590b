//! The baselines a soup is compared with (IMP, IMP with m-times longer
//! retraining, IMP-RePrune), each a chain of prune-retrain phases in
//! `RUN/baselines/`.

use crate::error::Result;
use crate::sms::config::Baseline;
use crate::sms::layout::Chain;
use crate::sms::session::Session;

impl Session {
    /// Runs one baseline chain through every phase.
    pub fn baseline(&self, baseline: Baseline) -> Result<()> {
        for phase in 1..=self.cfg.phases {
            match baseline {
                Baseline::Imp => {
                    self.prepare(Chain::Imp(0), phase)?;
                    self.candidate(Chain::Imp(0), phase, 0)?;
                }
                Baseline::ImpLong => {
                    self.prepare(Chain::ImpLong, phase)?;
                    self.candidate(Chain::ImpLong, phase, 0)?;
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
