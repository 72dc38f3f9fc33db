//! What a reload compares, keeps and watches — all derived from [`SETTINGS`], so a setting
//! added to the table is diffed, kept (when it needs a restart) and watched (when it names
//! files) without another list to update. Applying the new configuration is the state's
//! job (`crate::state`); this module only says what changed.

use std::path::PathBuf;

use super::settings::{Apply, Read, Setting, Value, SETTINGS};
use super::GateConfig;

/// `route.upstream` at index 2 → `route[2].upstream`.
fn indexed(key: &str, i: usize) -> String {
    match key.split_once('.') {
        Some((section, field)) => format!("{section}[{i}].{field}"),
        None => format!("{key}[{i}]"),
    }
}

fn joined(values: &[Value]) -> String {
    let v: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    v.join(", ")
}

/// The changed settings of one server block and its routes. `at` names the block: `None`
/// for the first (whose keys are plain, and which carries the listener's settings too),
/// `Some(i)` for `server[i]`.
fn block_changes(a: &GateConfig, b: &GateConfig, at: Option<usize>, out: &mut Vec<String>) {
    let within = |key: String| match at {
        None => key,
        Some(i) => format!("server[{i}].{key}"),
    };
    for s in SETTINGS {
        let read = match (s.read, at) {
            (Read::Server(read), _) | (Read::Listener(read), None) => read,
            _ => continue,
        };
        if read(a) != read(b) {
            out.push(match at {
                None => s.key.to_string(),
                Some(i) => indexed(s.key, i),
            });
        }
    }
    if a.routes.len() != b.routes.len() {
        out.push(within(format!(
            "route (now {} instead of {})",
            b.routes.len(),
            a.routes.len()
        )));
        return;
    }
    // Route by route: all of route[0]'s changes, then route[1]'s.
    for (i, (ra, rb)) in a.routes.iter().zip(&b.routes).enumerate() {
        for s in SETTINGS {
            if let Read::Route(read) = s.read {
                if read(ra) != read(rb) {
                    out.push(within(indexed(s.key, i)));
                }
            }
        }
    }
}

impl GateConfig {
    /// The values of `s` in this configuration, one per route or tunnel for their settings,
    /// each with its key (`route[0].upstream`).
    pub(crate) fn values_of(&self, s: &Setting) -> Vec<(String, Value)> {
        match s.read {
            Read::Listener(read) | Read::Server(read) => vec![(s.key.to_string(), read(self))],
            Read::Route(read) => self
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| (indexed(s.key, i), read(r)))
                .collect(),
            Read::Tunnel(read) => self
                .tunnels
                .iter()
                .enumerate()
                .map(|(i, t)| (indexed(s.key, i), read(t)))
                .collect(),
        }
    }

    /// Every file whose change should trigger a reload: the files every setting names (in
    /// every route, tunnel and server block), and the configuration file.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for s in SETTINGS {
            for (_, value) in self.values_of(s) {
                if let Value::Files(files) = value {
                    v.extend(files);
                }
            }
        }
        for h in &self.vhosts {
            v.extend(h.config.watched_files());
        }
        if let Some(s) = &self.source {
            v.push(s.clone());
        }
        v
    }

    /// The keys of the settings that differ between this configuration and `next` (for the
    /// reload's log line): the listener's and the first server block's in the order of
    /// [`SETTINGS`], then each route's, then each further server block's
    /// (`server[1].cert`, `server[1].route[0].upstream`), then each tunnel's.
    pub fn changed_settings(&self, next: &GateConfig) -> Vec<String> {
        let (a, b) = (self, next);
        let mut out: Vec<String> = Vec::new();
        block_changes(a, b, None, &mut out);
        if a.vhosts.len() != b.vhosts.len() {
            out.push(format!(
                "server (now {} blocks instead of {})",
                b.vhosts.len() + 1,
                a.vhosts.len() + 1
            ));
        } else {
            for (i, (va, vb)) in a.vhosts.iter().zip(&b.vhosts).enumerate() {
                let before = out.len();
                block_changes(&va.config, &vb.config, Some(i + 1), &mut out);
                if out.len() == before && va != vb {
                    out.push(format!("server[{}]", i + 1));
                }
            }
        }
        if a.tunnels.len() == b.tunnels.len() {
            for i in 0..a.tunnels.len() {
                for s in SETTINGS {
                    if let Read::Tunnel(read) = s.read {
                        if read(&a.tunnels[i]) != read(&b.tunnels[i]) {
                            out.push(indexed(s.key, i));
                        }
                    }
                }
            }
        } else {
            out.push(format!(
                "tcp (now {} instead of {})",
                b.tunnels.len(),
                a.tunnels.len()
            ));
        }
        out
    }

    /// The settings of `next` that a reload cannot apply (those marked
    /// [`Apply::Restart`]), put back to this configuration's values; returns a sentence for
    /// each one that differed.
    pub fn keep_restart_settings(&self, next: &mut GateConfig) -> Vec<String> {
        let mut kept = Vec::new();
        for s in SETTINGS {
            let Apply::Restart(keep) = s.apply else {
                continue;
            };
            let running: Vec<Value> = self.values_of(s).into_iter().map(|(_, v)| v).collect();
            let wanted: Vec<Value> = next.values_of(s).into_iter().map(|(_, v)| v).collect();
            if running == wanted {
                continue;
            }
            kept.push(match s.read {
                Read::Listener(_) | Read::Server(_) => format!(
                    "{} changed to {} but needs a restart; still {}",
                    s.key,
                    joined(&wanted),
                    joined(&running)
                ),
                Read::Route(_) | Read::Tunnel(_) => format!(
                    "{} changed to ({}) but needs a restart; keeping the running ones ({}) and their settings",
                    s.key,
                    joined(&wanted),
                    joined(&running)
                ),
            });
            keep(self, next);
        }
        kept
    }
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;
