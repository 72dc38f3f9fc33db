//! `mtlsgate serve`: the gateway from `--config gate.toml` or the one-route flags, and the
//! flag groups it shares with `mtlsgate tunnel` (the inventory, TLS towards the upstream).

use std::path::PathBuf;

use clap::Args;
use mtlsgate_proxy::config::settings::{self, defaults};

/// `mtlsgate serve`: either `--config gate.toml`, or flags for the one-route case. The
/// flags are lowered into the same raw form gate.toml parses into, and validated once;
/// defaults come from `mtlsgate_proxy::config::settings::defaults`.
#[derive(Args, Debug)]
#[command(after_help = serve_help())]
pub struct Serve {
    /// TOML configuration file (listeners, routes, policies). Excludes the one-route flags;
    /// --admin-listen and --threads override the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:8443; without --cert, 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Server certificate chain (PEM), as nginx's ssl_certificate. Without --cert and --key
    /// the listener speaks plain HTTP (on loopback by default) and sends requests out over
    /// TLS: an egress listener for programs that know nothing of TLS.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Server private key (PEM), as nginx's ssl_certificate_key.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// File whose first line decrypts an encrypted --key, as nginx's ssl_password_file.
    #[arg(long, value_name = "FILE")]
    pub key_passphrase_file: Option<PathBuf>,
    /// Trusted client CA bundle(s) or pinned certificates, as ssl_client_certificate.
    #[arg(long, value_name = "FILE")]
    pub client_ca: Vec<PathBuf>,
    /// CA bundle(s) that verify clients without being named in the TLS CertificateRequest,
    /// as nginx's ssl_trusted_certificate.
    #[arg(long, value_name = "FILE")]
    pub trusted_ca: Vec<PathBuf>,
    /// Upstream URL for the default route: http://HOST:PORT or https://HOST:PORT.
    #[arg(long, value_name = "URL", required_unless_present = "config")]
    pub upstream: Option<String>,
    #[command(flatten)]
    pub upstream_tls: UpstreamTlsFlags,
    /// Allowlist file: one device ID per line, # comments (reloaded when it changes).
    #[arg(long, value_name = "FILE")]
    pub allow_file: Vec<PathBuf>,
    /// Allow this device ID (repeatable).
    #[arg(long, value_name = "ID")]
    pub allow_device_id: Vec<String>,
    #[command(flatten)]
    pub inventory: InventoryFlags,
    /// Client verification: require (nginx on), optional, optional_no_ca, off
    /// [default: require; off without --cert].
    #[arg(long, value_name = "MODE")]
    pub verify_client: Option<String>,
    /// Maximum chain depth, as ssl_verify_depth.
    #[arg(long, value_name = "N", default_value_t = defaults::VERIFY_DEPTH as i64)]
    pub verify_depth: i64,
    /// CRL file(s), as ssl_crl.
    #[arg(long, value_name = "FILE")]
    pub crl: Vec<PathBuf>,
    /// With CRLs: strict (as nginx: a chain whose CA has no CRL, or whose CRL expired, is
    /// refused) or lenient (only a listed serial refuses) [default: strict].
    #[arg(long, value_name = "MODE")]
    pub crl_check: Option<String>,
    /// Trust a client certificate by its SHA-256 fingerprint (repeatable).
    #[arg(long, value_name = "HEX")]
    pub pin_sha256: Vec<String>,
    /// Turn TLS session resumption off (tickets and session cache).
    #[arg(long)]
    pub no_resumption: bool,
    /// Refuse bad or missing client certificates in the TLS handshake (no HTTP 400 page).
    #[arg(long)]
    pub reject_at_handshake: bool,
    /// Verify every connection's chain from scratch, even when the same client certificate
    /// was verified moments ago (the cache is on by default; this is for benchmarks).
    #[arg(long)]
    pub no_verify_cache: bool,
    /// Extra upstream header from an nginx-style template, NAME=TEMPLATE (repeatable),
    /// e.g. 'X-Device=$client_device_id'.
    #[arg(long, value_name = "NAME=TEMPLATE")]
    pub header: Vec<String>,
    /// Also send Envoy's X-Forwarded-Client-Cert.
    #[arg(long)]
    pub xfcc: bool,
    /// The Host the upstream receives: client (the one the client sent, as nginx's
    /// `proxy_set_header Host $http_host`) or upstream (the host of the --upstream URL, as
    /// nginx's proxy_pass; over HTTP/2 as :authority alone) [default: client; upstream
    /// without --cert]. A route that keeps the client's Host speaks HTTP/1.1 to its upstream.
    #[arg(long, value_name = "client|upstream")]
    pub host_header: Option<String>,
    /// Access log: text, json or off.
    #[arg(long, value_name = "FORMAT", default_value = defaults::ACCESS_LOG)]
    pub access_log: String,
    /// How long an access-log line may wait in the buffer before it is written: 0 writes
    /// each line at once (one write per request). SIGTERM and a reload lose none.
    #[arg(long, value_name = "DURATION", default_value = defaults::ACCESS_LOG_FLUSH_TEXT)]
    pub access_log_flush: String,
    /// Admin listener for /healthz and /metrics (loopback only), e.g. 127.0.0.1:9901.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Worker threads [default: one per core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Check the configuration and every file it names (certificates, keys, CA bundles,
    /// CRLs, allowlists), say what would run, and exit without listening (as `nginx -t`):
    /// exit status 0 when it would start, 1 with the reason when not.
    #[arg(long)]
    pub check: bool,
}

/// The device inventory as a policy, shared by `serve` and `tunnel`.
#[derive(Args, Debug, Clone, Default)]
pub struct InventoryFlags {
    /// Let in only devices the inventory says are active: a CA directory (its
    /// inventory.db) or a postgres:// URL shared with `mtlsgate ca serve`. Revocations
    /// reach the gateway within a second and close the device's open connections.
    #[arg(long, value_name = "CA_DIR_OR_URL")]
    pub inventory: Option<String>,
    /// With --inventory: the device must also carry one of these tags (repeatable).
    #[arg(long, value_name = "TAG", requires = "inventory")]
    pub allow_tag: Vec<String>,
    /// How often an SQLite inventory is checked for changes [default: 500ms].
    #[arg(long, value_name = "DURATION", requires = "inventory")]
    pub inventory_poll: Option<String>,
}

/// TLS towards an https:// upstream or a tunnel's target (nginx's `proxy_ssl_*`), shared
/// by `serve` and `tunnel`.
#[derive(Args, Debug, Clone, Default)]
pub struct UpstreamTlsFlags {
    /// CA bundle that signs the certificate of an https:// upstream (or of the tunnel's
    /// target), as nginx's proxy_ssl_trusted_certificate [default: the system's trust
    /// store].
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Vec<PathBuf>,
    /// Client certificate (chain) presented to the upstream or target, as
    /// proxy_ssl_certificate; reloaded when the file changes.
    #[arg(long, value_name = "FILE", requires = "upstream_key")]
    pub upstream_cert: Option<PathBuf>,
    /// Key of --upstream-cert, as proxy_ssl_certificate_key.
    #[arg(long, value_name = "FILE", requires = "upstream_cert")]
    pub upstream_key: Option<PathBuf>,
    /// File whose first line decrypts --upstream-key.
    #[arg(long, value_name = "FILE")]
    pub upstream_key_passphrase_file: Option<PathBuf>,
    /// Name to verify the upstream's certificate against (and send as SNI), as
    /// proxy_ssl_name [default: the host of --upstream or --target].
    #[arg(long, value_name = "NAME")]
    pub upstream_server_name: Option<String>,
}

/// Flags of `serve` that may be given together with `--config`, and override the file
/// (see `mtlsgate_proxy::config::Overrides`).
pub const OVERRIDES: [&str; 2] = ["--admin-listen", "--threads"];

/// `--allow-tag`: part of `route.allow` (whose flag is `--inventory`).
const ALSO_ONE_ROUTE: [&str; 1] = ["--allow-tag"];

/// The one-route flags `--config` excludes (long names): the flag of every `server.*`,
/// `timeouts.*` and `route.*` setting of the settings table, but the overrides.
pub fn one_route_flags() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    let flags = settings::SETTINGS
        .iter()
        .filter(|s| !s.key.starts_with("tcp."))
        .filter_map(|s| s.flag)
        .chain(ALSO_ONE_ROUTE)
        .filter(|f| !OVERRIDES.contains(f));
    for f in flags {
        let long = f.trim_start_matches('-');
        if !out.contains(&long) {
            out.push(long);
        }
    }
    out
}

/// Makes `--config` of the `serve` command exclude [`one_route_flags`].
pub fn exclude_one_route_flags(serve: clap::Command) -> clap::Command {
    let one_route = one_route_flags();
    let ids: Vec<clap::Id> = serve
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| one_route.contains(&l)))
        .map(|a| a.get_id().clone())
        .collect();
    serve.mut_arg("config", |a| a.conflicts_with_all(ids))
}

/// "--listen, --admin-listen and --threads".
pub(crate) fn listed(flags: &[&str]) -> String {
    match flags {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// `serve --help`'s text after the flags; the restart-only flags come from the settings
/// table.
fn serve_help() -> String {
    format!(
        "Examples:
  mtlsgate serve --listen 0.0.0.0:8443 --cert server.crt --key server.key \\
      --client-ca ca.crt --upstream http://127.0.0.1:8000 --allow-file whitelist.txt
  mtlsgate serve --config gate.toml
  mtlsgate serve --listen 127.0.0.1:8080 --upstream https://api.internal:8443 \\
      --upstream-ca ca.crt --upstream-cert client.crt --upstream-key client.key

Request paths are normalised before routing (percent-escapes decoded, // merged, . and ..
resolved) and the upstream receives the normalised path; %2F, backslashes, ; and .. above
the root are refused with 400.
Reload: SIGHUP, or change any certificate, key, CA, CRL, allowlist or config file. A reload
applies every setting but these, which need a restart:
  {}.
Stop: SIGTERM or Ctrl-C finish in-flight requests first.",
        listed(&settings::restart_flags("server."))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(name: &str) -> clap::Command {
        let mut cmd = crate::flags::command();
        cmd.build();
        cmd.find_subcommand(name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} command"))
    }

    fn longs(cmd: &clap::Command) -> Vec<String> {
        cmd.get_arguments()
            .filter_map(|a| a.get_long())
            .map(|l| format!("--{l}"))
            .collect()
    }

    /// Each flag of the settings table is a flag of its command: `tunnel` for `tcp.*`,
    /// `serve` for the rest.
    #[test]
    fn every_flag_of_the_table_is_a_flag_of_its_command() {
        let (serve, tunnel) = (longs(&sub("serve")), longs(&sub("tunnel")));
        for s in settings::SETTINGS {
            let Some(f) = s.flag else { continue };
            let cmd = if s.key.starts_with("tcp.") {
                &tunnel
            } else {
                &serve
            };
            assert!(cmd.iter().any(|l| l == f), "{}: {f} is not a flag", s.key);
        }
    }

    /// Each flag of `serve` sets a setting of the table (or is one of the few that set
    /// none) and, unless it overrides the file, cannot be given with `--config`.
    #[test]
    fn every_serve_flag_is_a_setting_and_config_excludes_the_one_route_ones() {
        let serve = sub("serve");
        let config = serve
            .get_arguments()
            .find(|a| a.get_id() == "config")
            .expect("--config");
        let excluded: Vec<String> = serve
            .get_arg_conflicts_with(config)
            .iter()
            .filter_map(|a| a.get_long())
            .map(|l| format!("--{l}"))
            .collect();
        let table: Vec<&str> = settings::SETTINGS
            .iter()
            .filter(|s| !s.key.starts_with("tcp."))
            .filter_map(|s| s.flag)
            .collect();
        for f in longs(&serve) {
            if ["--config", "--check", "--help", "--version"].contains(&f.as_str()) {
                continue;
            }
            assert!(
                table.contains(&f.as_str()) || ALSO_ONE_ROUTE.contains(&f.as_str()),
                "{f} sets no setting of the settings table"
            );
            assert_eq!(
                excluded.contains(&f),
                !OVERRIDES.contains(&f.as_str()),
                "{f}: excluded by --config: {}",
                excluded.contains(&f)
            );
        }
    }

    /// `serve --help` names every restart-only flag of the table.
    #[test]
    fn serve_help_names_the_restart_only_flags_of_the_table() {
        let help = sub("serve").render_long_help().to_string();
        let at = help
            .find("which need a restart:")
            .expect("the reload sentence");
        let sentence = &help[at..];
        let sentence = &sentence[..sentence.find('.').unwrap_or(sentence.len())];
        let restart = settings::restart_flags("server.");
        assert!(restart.len() >= 5, "{restart:?}");
        for f in restart {
            assert!(sentence.contains(f), "{f} missing from: {sentence}");
        }
    }
}
