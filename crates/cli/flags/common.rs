//! Flag groups several commands share: where the CA and its inventory are, the CA keys'
//! passphrase, which CA a fleet command works on, key types and certificate kinds.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Where the CA lives.
#[derive(Args, Debug, Clone)]
pub struct CaDir {
    /// CA directory.
    #[arg(
        long = "dir",
        env = "MTLSGATE_CA_DIR",
        default_value = "mtlsgate-ca",
        value_name = "DIR"
    )]
    pub dir: PathBuf,
}

/// Where the CA keeps its inventory.
#[derive(Args, Debug, Clone, Default)]
pub struct Database {
    /// The inventory's database: a PostgreSQL URL (postgres://USER@HOST:PORT/DB) [default:
    /// the one `ca init --database` recorded in DIR/ca.toml, else DIR/inventory.db].
    #[arg(long, env = "MTLSGATE_DATABASE", value_name = "URL")]
    pub database: Option<String>,
}

/// Which CA a fleet command (`token`, `devices`) works on: its directory and inventory,
/// used directly, or with `--server URL` the admin API of `mtlsgate ca serve`, as an
/// administrator (see `crate::fleet::Fleet`).
#[derive(Args, Debug, Clone)]
pub struct FleetTarget {
    /// CA directory [default: mtlsgate-ca]. With --server, where admin.crt, admin.key and
    /// ca.crt are taken from unless --admin-cert, --admin-key and --ca-file name them.
    #[arg(long = "dir", env = "MTLSGATE_CA_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub db: Database,
    /// Work through the CA server's admin API (`mtlsgate ca serve`), https://HOST:PORT,
    /// instead of the CA directory and its inventory [default: the server `mtlsgate login`
    /// remembered, unless --dir or --database is given].
    #[arg(long, env = "MTLSGATE_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// With --server: the administrator's client certificate [default: DIR/admin.crt].
    #[arg(long, env = "MTLSGATE_ADMIN_CERT", value_name = "FILE")]
    pub admin_cert: Option<PathBuf>,
    /// With --server: the administrator's key [default: DIR/admin.key].
    #[arg(long, env = "MTLSGATE_ADMIN_KEY", value_name = "FILE")]
    pub admin_key: Option<PathBuf>,
    /// With --server: the CA certificates the server's certificate must chain to
    /// [default: DIR/ca.crt].
    #[arg(long, env = "MTLSGATE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// The CA directory when none is given.
pub const DEFAULT_CA_DIR: &str = "mtlsgate-ca";

/// The CA keys' passphrase, when `ca init` encrypted them.
#[derive(Args, Debug, Clone)]
pub struct Passphrase {
    /// File whose first line is the passphrase of the CA keys (only for a CA created with one).
    #[arg(long, env = "MTLSGATE_CA_PASSPHRASE_FILE", value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    Client,
    Server,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTypeArg {
    P256,
    P384,
    Ed25519,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl From<KeyTypeArg> for mtlsgate_pki::key::KeyType {
    fn from(k: KeyTypeArg) -> Self {
        use mtlsgate_pki::key::KeyType;
        match k {
            KeyTypeArg::P256 => KeyType::P256,
            KeyTypeArg::P384 => KeyType::P384,
            KeyTypeArg::Ed25519 => KeyType::Ed25519,
            KeyTypeArg::Rsa2048 => KeyType::Rsa2048,
            KeyTypeArg::Rsa3072 => KeyType::Rsa3072,
            KeyTypeArg::Rsa4096 => KeyType::Rsa4096,
        }
    }
}
