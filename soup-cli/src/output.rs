//! What commands share for talking to the user: the run context (progress,
//! interrupt flag, budget), aligned tables, number formatting, and the
//! escaping of names and paths in everything printed for people.

use std::io::{IsTerminal, Write};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use soup_core::{Control, Progress, StreamOptions};

use crate::cli::Global;

/// How a successful command ended: the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done; nothing to report (exit 0).
    Clean = 0,
    /// Done; the comparison found differences (exit 1).
    Findings = 1,
}

/// Progress bar on standard error, drawn only when it is a terminal.
pub struct Bar {
    bar: Mutex<Option<ProgressBar>>,
    enabled: bool,
}

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>16} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        *self.bar.lock().expect("not poisoned") = Some(bar);
    }
    fn advance(&self, bytes: u64) {
        if let Some(bar) = self.bar.lock().expect("not poisoned").as_ref() {
            bar.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Some(bar) = self.bar.lock().expect("not poisoned").take() {
            bar.finish_and_clear();
        }
    }
}

/// Everything a command needs besides its own arguments.
pub struct Context {
    /// Print JSON instead of tables.
    pub json: bool,
    bar: Bar,
    interrupt: &'static AtomicBool,
    options: StreamOptions,
    digest: soup_core::DigestKind,
}

impl Context {
    /// Builds the context from the global flags.
    pub fn new(global: &Global, interrupt: &'static AtomicBool) -> Context {
        let mut options = StreamOptions::default();
        if let Some(budget) = global.budget {
            options.budget_bytes = budget.max(1 << 16) as usize;
        }
        Context {
            json: global.json,
            bar: Bar {
                bar: Mutex::new(None),
                enabled: !global.quiet && std::io::stderr().is_terminal(),
            },
            interrupt,
            options,
            digest: global.digest,
        }
    }

    /// The flag that SIGINT, SIGTERM and SIGHUP set, for work that must
    /// stop something of its own (a greedy soup's evaluator).
    pub fn interrupt_flag(&self) -> &'static AtomicBool {
        self.interrupt
    }

    /// The soup-core control for long operations.
    pub fn control(&self) -> Control<'_> {
        Control {
            progress: &self.bar,
            interrupt: Some(self.interrupt),
            options: self.options,
            digest: self.digest,
        }
    }
}

/// Writes `value` as one line of JSON.
pub fn write_json(out: &mut dyn Write, value: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A table with aligned columns: text columns left-aligned, numeric ones
/// (as declared) right-aligned.
///
/// The cells are kept in one string with their end offsets, not one
/// `String` each, so a table of a million rows (a checkpoint with a
/// million tensors) costs the bytes of its text plus 8 bytes per cell.
pub struct Table {
    headers: Vec<&'static str>,
    numeric: Vec<bool>,
    /// Widths (in characters) of the columns so far.
    widths: Vec<usize>,
    /// Every cell's text, escaped, one after the other.
    text: String,
    /// The end of each cell in `text`.
    ends: Vec<usize>,
}

impl Table {
    /// A table with these columns; `numeric[i]` right-aligns column `i`.
    pub fn new(columns: &[(&'static str, bool)]) -> Table {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            numeric: columns.iter().map(|c| c.1).collect(),
            widths: columns.iter().map(|c| c.0.chars().count()).collect(),
            text: String::new(),
            ends: Vec::new(),
        }
    }

    /// Adds a row. Control characters in the cells are escaped.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        for (w, c) in self.widths.iter_mut().zip(&cells) {
            let c = escape(c);
            *w = (*w).max(c.chars().count());
            self.text.push_str(&c);
            self.ends.push(self.text.len());
        }
    }

    /// Writes the table.
    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let columns = self.headers.len();
        let mut line = String::new();
        let mut write_row = |cells: &mut dyn Iterator<Item = &str>| -> std::io::Result<()> {
            line.clear();
            for (i, c) in cells.enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = self.widths[i].saturating_sub(c.chars().count());
                if self.numeric[i] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    if i + 1 < columns {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
            writeln!(out, "{line}")
        };
        write_row(&mut self.headers.iter().copied())?;
        let mut start = 0;
        for row in self.ends.chunks_exact(columns.max(1)) {
            let mut cells = row.iter().map(|&end| {
                let cell = &self.text[start..end];
                start = end;
                cell
            });
            write_row(&mut cells)?;
        }
        Ok(())
    }
}

/// `text` safe to print to a terminal: control characters (C0, DEL, C1)
/// and the invisible characters that reorder or hide text (bidirectional
/// overrides and isolates, zero-width marks) become `\u{..}` escapes, and a
/// backslash becomes `\\`, so that an escape in the output always comes
/// from soup. A downloaded checkpoint's tensor names and metadata can then
/// neither send escape sequences to the terminal nor forge a line of the
/// report. JSON output is escaped by the JSON encoder instead.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    escape_with(text, true)
}

/// A file path for a result line, escaped like a tensor name ([`escape`]):
/// a file name can hold a newline or an escape sequence as easily as a
/// tensor name can.
pub fn escape_path(path: &std::path::Path) -> String {
    escape(&path.display().to_string()).into_owned()
}

/// Like [`escape`], but leaves backslashes alone: for error messages, which
/// quote regular expressions and are not parsed by anyone.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    escape_with(text, false)
}

fn escape_with(text: &str, backslash: bool) -> std::borrow::Cow<'_, str> {
    fn hostile(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    }
    let special = |c: char| hostile(c) || (backslash && c == '\\');
    if !text.chars().any(special) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if backslash && c == '\\' {
            out.push_str("\\\\");
        } else if hostile(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// `[3, 64, 3, 3]` as `3x64x3x3` (`scalar` for rank 0).
pub fn shape(shape: &[usize]) -> String {
    if shape.is_empty() {
        return "scalar".into();
    }
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// A byte count for people: `1.50 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A fraction as a percentage with two decimals.
pub fn percent(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_terminal_codes_and_forged_lines() {
        assert_eq!(escape("layer.0.weight"), "layer.0.weight");
        assert_eq!(
            escape("x\nverdict: masks identical"),
            "x\\u{a}verdict: masks identical"
        );
        assert_eq!(escape("\u{1b}[2J"), "\\u{1b}[2J");
        assert_eq!(escape("a\u{202e}b\u{9b}"), "a\\u{202e}b\\u{9b}");
        assert_eq!(escape("C:\\u{1b}"), "C:\\\\u{1b}");
        assert_eq!(escape("äöü 名前"), "äöü 名前");
        assert_eq!(escape_controls("a\\.b\u{7}"), "a\\.b\\u{7}");
    }
}
