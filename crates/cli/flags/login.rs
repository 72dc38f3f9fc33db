//! `mtlsgate login`: remembering a CA server and an administrator's certificate.

use std::path::PathBuf;

use clap::Args;

/// `mtlsgate login`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Example:
  mtlsgate login --server https://ca.example.com:8444 --dir /etc/mtlsgate/ca
  mtlsgate devices list          # now through https://ca.example.com:8444

The profile (~/.config/mtlsgate/profile.toml, or $MTLSGATE_PROFILE) holds the server's URL
and the paths of the CA file and the administrator's certificate and key, never a key.
--server, --dir, --database and the MTLSGATE_* variables still win over it.")]
pub struct Login {
    /// The CA server's admin API, https://HOST:PORT.
    #[arg(long, env = "MTLSGATE_SERVER", value_name = "URL")]
    pub server: String,
    /// CA directory to take admin.crt, admin.key and ca.crt from, unless --admin-cert,
    /// --admin-key and --ca-file name them.
    #[arg(long = "dir", env = "MTLSGATE_CA_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The administrator's client certificate [default: DIR/admin.crt].
    #[arg(long, env = "MTLSGATE_ADMIN_CERT", value_name = "FILE")]
    pub admin_cert: Option<PathBuf>,
    /// The administrator's key [default: DIR/admin.key].
    #[arg(long, env = "MTLSGATE_ADMIN_KEY", value_name = "FILE")]
    pub admin_key: Option<PathBuf>,
    /// The CA certificates the server's certificate must chain to [default: DIR/ca.crt].
    #[arg(long, env = "MTLSGATE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}
