//! Choosing tensors by name with `--include` / `--exclude` regular
//! expressions.

use regex::Regex;

use crate::error::{Error, Result};

/// Compiles name patterns (`--include`, `--exclude`, `--nm-transposed`);
/// a bad pattern is an error naming it.
pub(crate) fn compile_patterns(patterns: &[String]) -> Result<Vec<Regex>> {
    patterns
        .iter()
        .map(|p| Regex::new(p).map_err(|e| Error::invalid(format!("invalid regex `{p}`: {e}"))))
        .collect()
}

/// A name filter: a tensor is selected when it matches any include pattern
/// (or there are none) and no exclude pattern.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    include: Vec<Regex>,
    exclude: Vec<Regex>,
}

impl Selection {
    /// Compiles the patterns; a bad pattern is an error naming it.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Selection> {
        Ok(Selection {
            include: compile_patterns(include)?,
            exclude: compile_patterns(exclude)?,
        })
    }

    /// Whether the filter selects everything.
    pub fn is_all(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// The include patterns, as given (for provenance).
    pub fn include_patterns(&self) -> Vec<&str> {
        self.include.iter().map(Regex::as_str).collect()
    }

    /// The exclude patterns, as given (for provenance).
    pub fn exclude_patterns(&self) -> Vec<&str> {
        self.exclude.iter().map(Regex::as_str).collect()
    }

    /// Whether `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|r| r.is_match(name)))
            && !self.exclude.iter().any(|r| r.is_match(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_then_exclude() {
        let s = Selection::new(&["weight$".into()], &["^fc".into()]).unwrap();
        assert!(s.matches("conv1.weight"));
        assert!(!s.matches("fc.weight"));
        assert!(!s.matches("conv1.bias"));
        assert!(Selection::new(&["(".into()], &[])
            .unwrap_err()
            .to_string()
            .contains("invalid regex `(`"));
    }
}
