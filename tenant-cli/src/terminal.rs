//! The local terminal for `tenant shell`: raw mode that is always undone, and its size.

use std::io::IsTerminal as _;

use rustix::termios::{self, OptionalActions, Termios};

/// Raw mode on stdin's terminal while this lives; dropping it (also while a panic
/// unwinds) puts the saved settings back.
#[derive(Debug)]
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Switches stdin's terminal to raw mode: bytes pass as typed, no echo, no signals
    /// from Ctrl-C or Ctrl-Z (they reach the remote terminal instead).
    pub fn enable() -> std::io::Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing better to do on failure than leave the terminal as it is.
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// Columns and rows of the terminal on stdin, when stdin is one and knows its size.
pub fn size() -> Option<(u16, u16)> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    let size = termios::tcgetwinsize(&stdin).ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

/// Whether stdin is a terminal.
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}
