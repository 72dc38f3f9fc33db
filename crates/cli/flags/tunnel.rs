//! `mtlsgate tunnel`: one TCP tunnel from flags.

use std::path::PathBuf;

use clap::Args;

use super::{InventoryFlags, UpstreamTlsFlags};

/// `mtlsgate tunnel`: one TCP tunnel from flags (several, and HTTP routes beside them:
/// `[[tcp]]` sections in gate.toml with `mtlsgate serve --config`).
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  # In front of an MQTT broker: devices connect with mTLS, the broker sees plain TCP.
  mtlsgate tunnel --listen 0.0.0.0:8883 --cert server.crt --key server.key \\
      --client-ca ca.crt --allow-file whitelist.txt --target 127.0.0.1:1883
  # On a device: local programs speak plain TCP, the tunnel speaks mTLS to the broker.
  mtlsgate tunnel --listen 127.0.0.1:1883 --target broker.example:8883 \\
      --upstream-ca ca.crt --upstream-cert client.crt --upstream-key client.key

A client the tunnel refuses (bad certificate, not on the allowlist) gets a TLS alert in the
handshake and a log line naming its device ID. Reload: SIGHUP or a changed file; a device
removed from the allowlist, or whose certificate is revoked, loses its open tunnel then.")]
pub struct Tunnel {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// HOST:PORT to carry the bytes to.
    #[arg(long, value_name = "HOST:PORT")]
    pub target: String,
    /// Certificate chain the tunnel presents to its clients (it then terminates mTLS).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Key of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// File whose first line decrypts --key.
    #[arg(long, value_name = "FILE")]
    pub key_passphrase_file: Option<PathBuf>,
    /// CA bundle(s) the clients' certificates must chain to.
    #[arg(long, value_name = "FILE")]
    pub client_ca: Vec<PathBuf>,
    /// CRL file(s).
    #[arg(long, value_name = "FILE")]
    pub crl: Vec<PathBuf>,
    /// With CRLs: strict (a missing or expired CRL refuses, as nginx) or lenient
    /// [default: strict].
    #[arg(long, value_name = "MODE")]
    pub crl_check: Option<String>,
    /// Maximum chain depth [default: 2].
    #[arg(long, value_name = "N")]
    pub verify_depth: Option<i64>,
    /// Trust a client certificate by its SHA-256 fingerprint (repeatable).
    #[arg(long, value_name = "HEX")]
    pub pin_sha256: Vec<String>,
    /// Allowlist file: one device ID per line (reloaded when it changes).
    #[arg(long, value_name = "FILE")]
    pub allow_file: Vec<PathBuf>,
    /// Allow this device ID (repeatable).
    #[arg(long, value_name = "ID")]
    pub allow_device_id: Vec<String>,
    #[command(flatten)]
    pub inventory: InventoryFlags,
    /// Send a PROXY protocol v2 header to the target: the client's address, and its device
    /// ID as the SSL TLV's CN.
    #[arg(long)]
    pub proxy_protocol: bool,
    #[command(flatten)]
    pub upstream_tls: UpstreamTlsFlags,
    /// Close a tunnel when nothing moved either way for this long [default: 10m].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// How long connecting to the target may take [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// Refuse connections beyond this many open tunnels [default: 100000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<i64>,
    /// Admin listener for /healthz and /metrics (loopback only), e.g. 127.0.0.1:9901.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Worker threads [default: one per core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}
