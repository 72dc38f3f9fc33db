//! What triggers a reload: SIGHUP, and changes to any file the configuration names
//! (certificates, keys, CA bundles, CRLs, allowlists, the config file itself). Directories
//! are watched rather than files, because editors and `mv` replace files by rename. Events
//! are debounced so a certificate and its key written one after the other cause one
//! reload. After every reload the set of watched files is taken again from the new
//! configuration, so a file first named by a reloaded gate.toml is watched from then on.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::state::State;

/// Which names in which directories count.
#[derive(Default)]
struct Targets {
    names: HashSet<OsString>,
    dirs: HashSet<PathBuf>,
}

impl Targets {
    fn of(state: &State) -> Targets {
        let files: Vec<PathBuf> = state
            .watched_files()
            .into_iter()
            .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
            .collect();
        Targets {
            names: files
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
                .collect(),
            dirs: files
                .iter()
                .filter_map(|p| p.parent().map(|d| d.to_path_buf()))
                .collect(),
        }
    }
}

/// Keeps the watcher alive; dropping it stops watching files (SIGHUP still reloads).
pub struct Watching {
    _watcher: Option<Arc<Mutex<notify::RecommendedWatcher>>>,
}

/// Starts reloading on SIGHUP and on file changes.
pub fn start(state: Arc<State>) -> Result<Watching, std::io::Error> {
    let kick = Arc::new(Notify::new());
    let targets = Arc::new(Mutex::new(Targets::default()));
    let t2 = targets.clone();
    let k2 = kick.clone();
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        let Ok(t) = t2.lock() else { return };
        if ev
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| t.names.contains(n)))
        {
            k2.notify_one();
        }
    });
    let watcher = match watcher {
        Ok(w) => Some(Arc::new(Mutex::new(w))),
        Err(e) => {
            tracing::warn!("cannot watch files for changes ({e}); reload with SIGHUP");
            None
        }
    };
    rewatch(&state, &targets, watcher.as_ref());

    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let (st, tg, w) = (state.clone(), targets.clone(), watcher.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                s = hup.recv() => {
                    if s.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP: reloading");
                }
                _ = kick.notified() => {
                    // Debounce: wait until the writes settle.
                    loop {
                        tokio::select! {
                            _ = kick.notified() => continue,
                            _ = tokio::time::sleep(Duration::from_millis(200)) => break,
                        }
                    }
                }
            }
            let (s, t, w) = (st.clone(), tg.clone(), w.clone());
            let (done, finished) = tokio::sync::oneshot::channel::<()>();
            let spawned = std::thread::Builder::new()
                .name("mtlsgate-reload".into())
                .spawn(move || {
                    lower_priority();
                    if s.reload().is_ok() {
                        rewatch(&s, &t, w.as_ref());
                    }
                    let _ = done.send(());
                });
            match spawned {
                Ok(_) => {
                    let _ = finished.await;
                }
                Err(e) => tracing::error!(
                    "cannot start a thread to reload ({e}); the previous configuration stays"
                ),
            }
        }
    });
    Ok(Watching { _watcher: watcher })
}

/// The nice value of the thread that builds a new snapshot.
const RELOAD_NICE: i32 = 10;

/// Builds a reload at a lower priority than the threads serving connections: reading a
/// million-line allowlist takes a core for a while, and where the workers have every core
/// busy, the requests come first (the reload then takes longer). Applies to the calling
/// thread only (on Linux the nice value is per thread); that is why a reload gets a thread
/// of its own rather than one of the runtime's blocking threads.
fn lower_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, RELOAD_NICE) {
        tracing::debug!("cannot lower the reload thread's priority: {e}");
    }
}

/// Takes the watched set from the current configuration, watching new directories.
fn rewatch(
    state: &State,
    targets: &Mutex<Targets>,
    watcher: Option<&Arc<Mutex<notify::RecommendedWatcher>>>,
) {
    let next = Targets::of(state);
    // The new directories are taken, and the names replaced, under the lock; the watches
    // are added after it is released. notify's event thread both runs the callback (which
    // takes this lock) and adds watches (which `watch` waits for): holding the lock across
    // `watch` deadlocked a gateway at start when a file in a directory watched a moment
    // earlier (a SQLite inventory being written) changed meanwhile.
    let added: Vec<PathBuf> = {
        let Ok(mut t) = targets.lock() else { return };
        let added = next.dirs.difference(&t.dirs).cloned().collect();
        *t = next;
        added
    };
    if let Some(w) = watcher {
        if let Ok(mut w) = w.lock() {
            for d in &added {
                if let Err(e) = w.watch(d, RecursiveMode::NonRecursive) {
                    tracing::warn!("cannot watch {} ({e}); reload with SIGHUP", d.display());
                }
            }
        }
    }
}
