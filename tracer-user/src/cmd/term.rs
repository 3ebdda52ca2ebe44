//! The user's terminal.

/// Progress output only for a person watching: stdout and stderr both on a terminal.
pub fn on_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}
