//! What triggers a reload: SIGHUP, and changes to any file the configuration names
//! (certificates, keys, CA bundles, CRLs, allowlists, the config file itself). Directories
//! are watched rather than files, because editors and `mv` replace files by rename.
//! Events are debounced so a certificate and its key written one after the other cause
//! one reload.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::state::State;

/// Starts the file watcher; returns it (dropping it stops watching).
pub fn start(state: Arc<State>) -> Option<notify::RecommendedWatcher> {
    let kick = Arc::new(Notify::new());
    let files: HashSet<PathBuf> = state
        .watched_files()
        .into_iter()
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
        .collect();
    let names: HashSet<std::ffi::OsString> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
        .collect();
    let dirs: HashSet<PathBuf> = files
        .iter()
        .filter_map(|p| p.parent().map(|d| d.to_path_buf()))
        .collect();
    let k2 = kick.clone();
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            if ev
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| names.contains(n)))
            {
                k2.notify_one();
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch files for changes ({e}); reload with SIGHUP");
            return None;
        }
    };
    for d in &dirs {
        if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
            tracing::warn!("cannot watch {} ({e}); reload with SIGHUP", d.display());
        }
    }
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            kick.notified().await;
            // Debounce: wait until the writes settle.
            loop {
                tokio::select! {
                    _ = kick.notified() => continue,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => break,
                }
            }
            let s = st.clone();
            let _ = tokio::task::spawn_blocking(move || s.reload()).await;
        }
    });
    Some(watcher)
}

/// Reloads on every SIGHUP.
pub fn on_sighup(state: Arc<State>) -> Result<(), std::io::Error> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            let s = state.clone();
            let _ = tokio::task::spawn_blocking(move || s.reload()).await;
        }
    });
    Ok(())
}
