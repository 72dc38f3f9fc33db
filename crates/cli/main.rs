//! The `mtlsgate` binary: parses flags, calls the libraries, and adds context to errors.
//! anyhow lives here and nowhere else.

#![forbid(unsafe_code)]

mod cmd_admin;
mod cmd_agent;
mod cmd_ca;
mod cmd_ca_serve;
mod cmd_ca_tidy;
mod cmd_cert;
mod cmd_devices;
mod cmd_quickstart;
mod cmd_serve;
mod cmd_token;
mod cmd_tunnel;
mod flags;
mod fleet;
mod hint;
mod listing;
mod log_sink;
mod profile;
mod prompt;

use std::process::ExitCode;

use flags::Command;

/// jemalloc, not the system's malloc: under glibc the gateway never gave back what a
/// flood of connections took (RSS 15 MB before, 187 MB after four floods of 5,000
/// connections; one arena was no better, the freed memory stays fragmented in the heap).
/// jemalloc's background threads return pages freed for a few seconds to the system
/// (bench/results/flood-memory.md, made with bench/flood-memory).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Without its background threads jemalloc returns freed pages only when the thread
    // that freed them allocates again, so an idle server after a flood would keep them.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    let cli = flags::parse();
    let result = match cli.command {
        Command::Ca(c) => cmd_ca::run(c),
        Command::Cert(c) => cmd_cert::run(c),
        Command::Serve(s) => cmd_serve::run(*s),
        Command::Tunnel(t) => cmd_tunnel::run(*t),
        Command::Quickstart(q) => cmd_quickstart::run(q),
        Command::Token(t) => cmd_token::run(t),
        Command::Devices(d) => cmd_devices::run(d),
        Command::Agent(a) => cmd_agent::run(a),
        Command::Login(l) => fleet::login(l),
        Command::Logout => fleet::logout(),
        Command::Admin(a) => cmd_admin::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            match hint::for_error(&e) {
                Some(h) => log_sink::line(format_args!("mtlsgate: error: {e:#} ({h})")),
                None => log_sink::line(format_args!("mtlsgate: error: {e:#}")),
            }
            ExitCode::from(1)
        }
    }
}

/// A small runtime for commands that touch the inventory.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(f))
}
