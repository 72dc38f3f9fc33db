//! How `devices list` and `ca list` print a listing that arrives page by page, without
//! holding it: a table, one JSON array written as the rows come (`[`, the rows, `]`, the
//! same text `serde_json::to_string_pretty` makes of the whole list), or JSON lines (one
//! object per line). Each page is flushed before the next is fetched.

use std::io::{self, BufWriter, Write};

use clap::Args;
use serde::Serialize;

/// The output flags a listing shares.
#[derive(Args, Debug, Clone)]
pub struct ListOutput {
    /// Print one JSON array (written as the rows arrive).
    #[arg(long, conflicts_with = "json_lines")]
    pub json: bool,
    /// Print JSON lines: one object per line.
    #[arg(long = "json-lines", alias = "jsonl")]
    pub json_lines: bool,
    /// Rows fetched per page (1 to 5000); the listing is fetched and printed page by page.
    #[arg(long, value_name = "N", default_value_t = mtlsgate_authority::DEFAULT_PAGE,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(mtlsgate_authority::MAX_PAGE)))]
    pub page_size: u32,
}

/// A listing being printed to stdout.
pub struct Printer {
    out: BufWriter<io::StdoutLock<'static>>,
    json: bool,
    json_lines: bool,
    rows: usize,
}

impl Printer {
    pub fn new(o: &ListOutput) -> Self {
        Printer {
            out: BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
            json: o.json,
            json_lines: o.json_lines,
            rows: 0,
        }
    }

    /// Whether rows are printed as a table (neither JSON form).
    pub fn table(&self) -> bool {
        !self.json && !self.json_lines
    }

    /// The stream, for table lines.
    pub fn out(&mut self) -> &mut impl Write {
        &mut self.out
    }

    /// Prints `row` in the JSON form asked for (nothing for a table).
    pub fn json_row<T: Serialize>(&mut self, row: &T) -> anyhow::Result<()> {
        if self.json_lines {
            serde_json::to_writer(&mut self.out, row)?;
            self.out.write_all(b"\n")?;
        } else if self.json {
            let text = serde_json::to_string_pretty(row)?;
            self.out
                .write_all(if self.rows == 0 { b"[\n" } else { b",\n" })?;
            for (n, line) in text.lines().enumerate() {
                if n > 0 {
                    self.out.write_all(b"\n")?;
                }
                write!(self.out, "  {line}")?;
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// After a page: what was printed reaches stdout.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Ends the listing (the JSON array's `]`).
    pub fn finish(mut self) -> io::Result<()> {
        if self.json {
            self.out
                .write_all(if self.rows == 0 { b"[]\n" } else { b"\n]\n" })?;
        }
        self.out.flush()
    }
}
