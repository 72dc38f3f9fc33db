//! `mtlsgate agent …`: the device side (enroll, run, status, whoami).

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Enroll this device: make its key here, send a CSR to the server, and install
    /// client.crt, client.key, ca.crt and agent.json in the state directory.
    Enroll(AgentEnroll),
    /// Keep the certificate fresh: renew at two thirds of its lifetime over mTLS, recover
    /// after it expired, run --on-renew after each new certificate.
    Run(AgentRun),
    /// Show the device ID, server, certificate serial and expiry, the renewal schedule and
    /// the last error (from the state directory; no network).
    Status(AgentStatus),
    /// Print this device's ID.
    Whoami(AgentWhoami),
}

/// The agent's state directory.
#[derive(Args, Debug, Clone)]
pub struct AgentDir {
    /// State directory: client.crt, client.key, ca.crt, agent.json.
    #[arg(
        long = "dir",
        env = "MTLSGATE_AGENT_DIR",
        default_value = mtlsgate_agent::DEFAULT_DIR,
        value_name = "DIR"
    )]
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  mtlsgate agent enroll --server https://ca.example.com:8444 --token mtg_… \\
      --root-fingerprint 3F:9C:…:A1
  mtlsgate agent enroll --server https://ca.example.com:8444 --ca-file root.crt --no-wait
  mtlsgate agent enroll --est https://ca.example.com:8444 --token mtg_… --ca-file root.crt

Without a token the device waits for an operator: `mtlsgate devices approve ID` on the CA.
The key is made on this device and never leaves it. A failed enrollment leaves the state
directory as it was.")]
pub struct AgentEnroll {
    /// The CA server (`mtlsgate ca serve`), https://HOST[:PORT].
    #[arg(
        long,
        value_name = "URL",
        required_unless_present = "est",
        conflicts_with = "est"
    )]
    pub server: Option<String>,
    /// Enroll and renew over EST (RFC 7030) instead: an EST server's base,
    /// https://HOST[:PORT][/.well-known/est[/LABEL]] (`mtlsgate ca serve` or another CA
    /// speaking EST). Needs --token; EST has no approval queue polling and no recovery.
    #[arg(long, value_name = "URL", requires = "token")]
    pub est: Option<String>,
    /// Enrollment token from `mtlsgate token create`; without one the device waits for an
    /// operator's approval.
    #[arg(
        long,
        env = "MTLSGATE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    #[command(flatten)]
    pub trust: AgentTrust,
    #[command(flatten)]
    pub dir: AgentDir,
    /// Run this command through `sh -c` once the certificate is installed (as `agent run
    /// --on-renew` does after each renewal), with MTLSGATE_DEVICE_ID, MTLSGATE_CERT and
    /// MTLSGATE_KEY set.
    #[arg(long, value_name = "CMD")]
    pub on_renew: Option<String>,
    /// When the device waits for approval: register and exit; `mtlsgate agent run` finishes
    /// the enrollment once it is approved.
    #[arg(long)]
    pub no_wait: bool,
    /// Enroll anew although the directory holds an enrolled or pending device, or a
    /// client.key/client.crt written otherwise (they stay until the new certificate arrives).
    #[arg(long)]
    pub force: bool,
    /// Host name sent to the server [default: this machine's].
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Time limit of each request to the server.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub timeout: String,
}

/// How `agent enroll` trusts the server: one of the two, never verification off.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct AgentTrust {
    /// Trust the server through the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Trust the server through the SHA-256 fingerprint of the CA's root certificate (as
    /// `mtlsgate cert inspect root.crt` shows it); the server must present its root.
    #[arg(long, value_name = "SHA256")]
    pub root_fingerprint: Option<String>,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Signals: SIGHUP renews at once; SIGTERM stops (a renewal under way is finished first).
Logs go to standard error (RUST_LOG=debug for more).
With --once (cron, systemd timers): renews if due, recovers if expired, finishes an approved
enrollment, and exits; exit status 0 when nothing was due."
)]
pub struct AgentRun {
    #[command(flatten)]
    pub dir: AgentDir,
    /// Renew if due (or recover if expired) and exit.
    #[arg(long)]
    pub once: bool,
    /// Run this command through `sh -c` after each new certificate, with
    /// MTLSGATE_DEVICE_ID, MTLSGATE_CERT and MTLSGATE_KEY set (e.g. `systemctl reload nginx`).
    #[arg(long, value_name = "CMD")]
    pub on_renew: Option<String>,
    /// Time limit of each request to the server.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub timeout: String,
}

#[derive(Args, Debug)]
pub struct AgentStatus {
    #[command(flatten)]
    pub dir: AgentDir,
    /// Print JSON (times as unix seconds).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct AgentWhoami {
    #[command(flatten)]
    pub dir: AgentDir,
    /// Print JSON: {"device_id": "…"}.
    #[arg(long)]
    pub json: bool,
}
