//! The pruning methods the trainer runs, registered by name.
//!
//! Each method is one module; this table is its registration: the name
//! reports and configurations use, the command that runs it, and a line
//! saying what it is. Adding a method is adding its module and one variant
//! here (with its row in [`Method::ALL`]'s order). Report rows name runs
//! through [`Method::run_name`], so every method's runs read alike:
//! `gmp`, `gmp+sms`, `gmp-long`.
//!
//! | name   | module          | command        |
//! |--------|-----------------|----------------|
//! | `imp`  | [`crate::sms`]  | `trainer sms`  |
//! | `gmp`  | `crate::pdt`    | `trainer pdt`  |
//! | `dpf`  | `crate::pdt`    | `trainer pdt`  |
//! | `bimp` | `crate::pdt`    | `trainer pdt`  |

use std::fmt;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// A registered pruning method.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ValueEnum,
)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum Method {
    /// Iterative magnitude pruning with sparse model soups: prune, retrain
    /// m candidates, average them, repeat (`trainer sms`).
    Imp,
    /// Gradual magnitude pruning: sparsity follows a cubic schedule while
    /// the model trains from scratch.
    Gmp,
    /// Dynamic pruning with feedback: masked forward pass, dense updates,
    /// the mask recomputed on the cubic schedule.
    Dpf,
    /// Budgeted IMP: IMP phases inside a fixed epoch budget.
    Bimp,
}

/// How a method's run is made, for naming it in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The method alone (one candidate).
    Plain,
    /// The method with sparse model soups.
    Sms,
    /// The method with m times the epochs (the soups' compute, serially).
    Long,
}

impl Method {
    /// Every registered method, in the order reports list them.
    pub const ALL: [Method; 4] = [Method::Imp, Method::Gmp, Method::Dpf, Method::Bimp];

    /// The name in reports, configurations and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::Imp => "imp",
            Method::Gmp => "gmp",
            Method::Dpf => "dpf",
            Method::Bimp => "bimp",
        }
    }

    /// The `trainer` subcommand that runs it.
    pub fn command(self) -> &'static str {
        match self {
            Method::Imp => "sms",
            Method::Gmp | Method::Dpf | Method::Bimp => "pdt",
        }
    }

    /// Whether the mask changes while the model trains from scratch
    /// (pruning during training), rather than between retraining phases of
    /// a trained model.
    pub fn prunes_during_training(self) -> bool {
        !matches!(self, Method::Imp)
    }

    /// The name of a run of this method in a report: `gmp`, `gmp+sms`,
    /// `gmp-long`.
    pub fn run_name(self, variant: Variant) -> String {
        match variant {
            Variant::Plain => self.name().to_string(),
            Variant::Sms => format!("{}+sms", self.name()),
            Variant::Long => format!("{}-long", self.name()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
                crate::Error::Config(format!(
                    "unknown method {s:?}: expected {}",
                    names.join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_everywhere_and_runs_are_named_alike() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
            assert_eq!(m.to_string(), m.name());
            let json = serde_json::to_value(m).unwrap();
            assert_eq!(json, serde_json::Value::String(m.name().into()));
            assert_eq!(<Method as ValueEnum>::from_str(m.name(), false).unwrap(), m);
        }
        assert_eq!(Method::Gmp.run_name(Variant::Sms), "gmp+sms");
        assert_eq!(Method::Dpf.run_name(Variant::Long), "dpf-long");
        assert_eq!(Method::Bimp.run_name(Variant::Plain), "bimp");
        assert_eq!(Method::Imp.command(), "sms");
        assert!(Method::Gmp.prunes_during_training() && !Method::Imp.prunes_during_training());
        let err = "lth".parse::<Method>().unwrap_err().to_string();
        assert!(err.contains("imp, gmp, dpf, bimp"), "{err}");
    }
}
