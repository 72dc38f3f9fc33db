//! Where log lines go: stderr, through a writer that never fails. A log line that cannot
//! be written (stderr on a full disk, a closed pipe) is dropped; the work goes on. The
//! standard writer's errors would otherwise reach tracing-subscriber, whose report of them
//! is an `eprintln!` — a panic when stderr is what failed.

use std::io::{self, Write};

/// Stderr, with write errors swallowed.
pub struct Stderr(io::Stderr);

/// A new writer on stderr (a `MakeWriter` for `tracing_subscriber::fmt`).
pub fn stderr() -> Stderr {
    Stderr(io::stderr())
}

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.write(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            // Dropped: the line is lost, not the process.
            Err(_) => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// Prints a line on stderr if it can (`eprintln!` panics when it cannot).
pub fn line(text: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr(), "{text}");
}
