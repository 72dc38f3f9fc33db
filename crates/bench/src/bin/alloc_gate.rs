//! `mtlsgate-alloc-gate --config gate.toml`: the gateway (as `mtlsgate serve --config
//! gate.toml`, one worker thread) under a counting global allocator, for the allocation
//! figures of the request path. The shipped `mtlsgate` never counts: this binary exists
//! only in the bench build.
//!
//! It prints `listening ADDR` once bound, then answers every line read on standard input
//! with `allocations N live B` (heap allocations since start, reallocations included, and
//! the bytes allocated and not yet freed), and stops when standard input closes. A driver reads the count, sends requests, and reads it again;
//! the difference between a run of `k` and of `2k` requests on one kept-alive connection,
//! divided by `k`, is what one request costs in steady state (the connection's own
//! allocations cancel out). Live bytes before and with `n` idle connections open, over `n`,
//! are the heap one idle connection holds.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use mtlsgate_proxy::config::Overrides;
use mtlsgate_proxy::{GateConfig, Gateway};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match args.as_slice() {
        [flag, path] if flag == "--config" => PathBuf::from(path),
        _ => return Err("usage: mtlsgate-alloc-gate --config gate.toml".into()),
    };
    let overrides = Overrides {
        admin_listen: None,
        threads: Some(1),
    };
    let cfg = GateConfig::from_file_with(&config, &overrides)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let gw = Gateway::bind(cfg).await?;
        let addr = gw
            .local_addr()?
            .ok_or("the configuration has no HTTP listener")?;
        println!("listening {addr}");
        std::io::stdout().flush()?;
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
        // Its own thread, so that answering costs the gateway's thread nothing; what it
        // allocates per line is the same for every line and cancels out of a difference.
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            let mut line = String::with_capacity(64);
            let mut out = std::io::stdout().lock();
            while stdin.lock().read_line(&mut line).is_ok_and(|n| n > 0) {
                line.clear();
                let s = GLOBAL.stats();
                let n = s.allocations + s.reallocations;
                let live = s.bytes_allocated as i128 - s.bytes_deallocated as i128
                    + s.bytes_reallocated as i128;
                if writeln!(out, "allocations {n} live {live}")
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    break;
                }
            }
            let _ = closed_tx.send(());
        });
        gw.run(async move {
            let _ = closed_rx.await;
        })
        .await?;
        Ok::<_, Error>(())
    })
}
