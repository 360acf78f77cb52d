//! Text tables, JSON documents and progress reporting (spinners on stderr in text mode,
//! NDJSON events on stderr in JSON mode).

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable tables and progress.
    #[default]
    Text,
    /// One JSON document on stdout (progress as NDJSON on stderr).
    Json,
}

/// Aligned columns; the first row is the header. Trailing spaces are trimmed.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .map(|row| row.get(column).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(text, "{}", cells.join("  ").trim_end());
    }
    text
}

/// Pretty JSON with a trailing newline.
pub fn json<T: Serialize>(value: &T) -> String {
    match serde_json::to_string_pretty(value) {
        Ok(text) => text + "\n",
        Err(error) => format!("{{\"error\": \"cannot serialise output: {error}\"}}\n"),
    }
}

/// Prints `value` as JSON or `text`, depending on the format.
pub fn emit<T: Serialize>(output: Output, value: &T, text: impl FnOnce() -> String) {
    match output {
        Output::Json => print!("{}", json(value)),
        Output::Text => print!("{}", text()),
    }
}

/// Short form of a long hex string: `0x1234…abcd` (the preflight crate's, which names keys).
pub use leasehold_preflight::short_hex;

/// A JSON address value (lower-case hex) in its checksummed form for text; `-` if absent.
pub fn address_text(value: &serde_json::Value) -> String {
    value
        .as_str()
        .and_then(|text| text.parse::<alloy::primitives::Address>().ok())
        .map_or_else(|| "-".to_owned(), |address| address.to_string())
}

/// `in 12s`, or `now` once `end` (unix seconds) has passed.
pub fn closes_in(end: u64) -> String {
    let now = leasehold_proto::client::unix_now();
    match end.checked_sub(now) {
        Some(left) if left > 0 => format!("in {left}s"),
        _ => "now".to_owned(),
    }
}

/// Lower-case name of a status enum, as JSON writes it.
pub fn status_text(status: &impl std::fmt::Debug) -> String {
    format!("{status:?}").to_lowercase()
}

/// Progress of a long command. Text mode: a spinner with the current activity and one line
/// per finished step (plain lines when stderr is not a terminal). JSON mode: one NDJSON
/// object per step or bid on stderr (`{"event", "message", "data", "elapsed_ms"}`, the
/// last counted from the start of the command), so stdout stays a single JSON document.
pub struct Progress {
    output: Output,
    spinner: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    pub fn new(output: Output) -> Self {
        let spinner = (output == Output::Text && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            output,
            spinner,
            started: Instant::now(),
        }
    }

    /// What is happening now: the spinner's message. Not an NDJSON event: it changes every
    /// poll (countdowns), and steps carry the information.
    pub fn working(&self, message: impl Into<String>) {
        if let Some(bar) = &self.spinner {
            bar.set_message(message.into());
        }
    }

    /// A finished step: printed above the spinner (or as an NDJSON event).
    pub fn step(&self, kind: &str, message: impl Into<String>, data: serde_json::Value) {
        let message = message.into();
        match (&self.spinner, self.output) {
            (_, Output::Json) => self.event(kind, &message, data),
            (Some(bar), Output::Text) => bar.println(format!("✔ {message}")),
            (None, Output::Text) => eprintln!("✔ {message}"),
        }
    }

    /// A line of text (e.g. a bid table row) in text mode; an event in JSON mode.
    pub fn line(&self, kind: &str, text: impl Into<String>, data: serde_json::Value) {
        let text = text.into();
        match (&self.spinner, self.output) {
            (_, Output::Json) => self.event(kind, &text, data),
            (Some(bar), Output::Text) => bar.println(text),
            (None, Output::Text) => eprintln!("{text}"),
        }
    }

    fn event(&self, kind: &str, message: &str, data: serde_json::Value) {
        let elapsed_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let event = serde_json::json!({
            "event": kind,
            "message": message,
            "data": data,
            "elapsed_ms": elapsed_ms,
        });
        eprintln!("{event}");
    }

    /// Removes the spinner.
    pub fn finish(&self) {
        if let Some(bar) = &self.spinner {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_trims() {
        let rows = vec![
            vec!["A".to_owned(), "BB".to_owned(), String::new()],
            vec!["long".to_owned(), "x".to_owned(), String::new()],
        ];
        assert_eq!(table(&rows), "A     BB\nlong  x\n");
    }
}
