//! Asking a person at a terminal for a passphrase (as `openssl` and `ssh-keygen` do): the
//! prompt goes to the controlling terminal (`/dev/tty`), echo is off while the line is
//! typed, and nothing is asked when there is no terminal.

use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use zeroize::Zeroizing;

/// Whether a person can be asked: standard input is a terminal.
pub fn at_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdin())
}

/// Prints `prompt` on the terminal and reads one line with echo off.
pub fn passphrase(prompt: &str) -> Result<Zeroizing<Vec<u8>>> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("cannot open the terminal to ask for the passphrase")?;
    let saved = tcgetattr(&tty).context("cannot read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    (&tty)
        .write_all(prompt.as_bytes())
        .and_then(|()| (&tty).flush())
        .context("cannot write to the terminal")?;
    tcsetattr(&tty, OptionalActions::Flush, &quiet).context("cannot turn echo off")?;
    let mut line = Zeroizing::new(String::new());
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let restored = tcsetattr(&tty, OptionalActions::Now, &saved);
    read.context("cannot read the passphrase from the terminal")?;
    restored.context("cannot restore the terminal's echo")?;
    let text = line.trim_end_matches(['\r', '\n']);
    if text.is_empty() {
        anyhow::bail!("no passphrase was typed");
    }
    Ok(Zeroizing::new(text.as_bytes().to_vec()))
}

/// Asks twice for a new passphrase; they must match.
pub fn new_passphrase(what: &str) -> Result<Zeroizing<Vec<u8>>> {
    let first = passphrase(&format!("New passphrase for {what}: "))?;
    let again = passphrase("The same passphrase again: ")?;
    if *first != *again {
        anyhow::bail!("the two passphrases differ; nothing was created");
    }
    Ok(first)
}
