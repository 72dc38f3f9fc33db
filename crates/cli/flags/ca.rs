//! `mtlsgate ca …`: the private CA (init, bundle, list, revoke, crl, tidy) and its HTTPS server.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CaDir, Database, KeyTypeArg, Passphrase};

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a root CA and an intermediate CA signed by it (root → intermediate → leaf).
    Init(CaInit),
    /// Print the PEM trust bundle (root + intermediate) for nginx `ssl_client_certificate`,
    /// `mtlsgate serve --client-ca`, or curl `--cacert`.
    Bundle(CaDir),
    /// List every certificate this CA issued.
    List(CaList),
    /// Revoke a certificate by serial or by file.
    Revoke(CaRevoke),
    /// Write a signed CRL (intermediate's CRL followed by the root's) for nginx `ssl_crl`
    /// or `mtlsgate serve --crl`.
    Crl(CaCrl),
    /// Remove what the inventory no longer needs: certificates expired longer ago than
    /// --keep-expired (revoked ones too, once expired), and audit records older than
    /// --keep-audit (exported first). `ca serve` does this on its own (--tidy-every).
    Tidy(CaTidy),
    /// Run the CA's HTTPS API: device enrollment, renewal and recovery, the CA bundle and
    /// CRL, and the admin API that `mtlsgate devices`/`token create --server URL` use.
    Serve(Box<CaServe>),
}

#[derive(Args, Debug)]
#[command(after_help = "Example:
  mtlsgate ca serve --dir ca --listen 0.0.0.0:8444 --dns ca.example.com
  # on a device, with a token from `mtlsgate token create --dir ca`:
  mtlsgate agent enroll --server https://ca.example.com:8444 --token mtg_… \\
      --root-fingerprint <the fingerprint ca serve prints>

Endpoints (docs/device-lifecycle.md): POST /v1/enroll, GET /v1/enroll/ID, POST /v1/renew
(mTLS), POST /v1/recover, GET /v1/ca.pem, GET /v0.2/ca-bundle, GET /v1/crl, GET /healthz,
and the admin API under /v1/devices, /v1/certificates and /v1/tokens (an administrator's
client certificate: admin.crt in the CA directory, or `mtlsgate cert issue admin NAME`).
The server's own certificate is issued by the CA for --dns and --ip, kept in memory only,
and renewed by the server at two thirds of --server-cert-lifetime, without a restart.
Stop: SIGTERM or Ctrl-C finish requests under way first.")]
pub struct CaServe {
    #[command(flatten)]
    pub ca: CaDir,
    #[command(flatten)]
    pub db: Database,
    #[command(flatten)]
    pub pass: Passphrase,
    /// Address to listen on, e.g. 0.0.0.0:8444.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// DNS name in the server's certificate (repeatable); devices reach the server by one
    /// of them [default: localhost].
    #[arg(long, value_name = "NAME")]
    pub dns: Vec<String>,
    /// IP address in the server's certificate (repeatable) [default: 127.0.0.1 and ::1].
    #[arg(long, value_name = "ADDR")]
    pub ip: Vec<IpAddr>,
    /// Lifetime of a device certificate when its token does not set one.
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub default_lifetime: String,
    /// No device certificate lives longer (tokens asking for more are refused).
    #[arg(long, default_value = "30d", value_name = "DURATION")]
    pub max_lifetime: String,
    /// No device certificate lives shorter (tokens asking for less are refused).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub min_lifetime: String,
    /// Lifetime of the certificates of devices with this tag, e.g. cameras=6h
    /// (repeatable); a token's --lifetime still wins, and of several tags the shortest.
    #[arg(long, value_name = "TAG=DURATION")]
    pub tag_lifetime: Vec<String>,
    /// How long after its certificate expired a device may still recover.
    #[arg(long, default_value = "30d", value_name = "DURATION")]
    pub recovery_grace: String,
    /// Lifetime of the server's own certificate (renewed at two thirds of it).
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    pub server_cert_lifetime: String,
    /// A connection that sends no request this long after its TLS handshake is closed.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub first_request_timeout: String,
    /// A request head (HTTP/1.1 header, HTTP/2 HEADERS) must arrive within this time of
    /// its first byte, or the connection is closed.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub header_timeout: String,
    /// A request body must arrive within this time of its head, or the connection is closed.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub body_timeout: String,
    /// A connection with no request in flight for this long is closed.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub idle_timeout: String,
    /// Connections open at once; more are closed at once (keep it below the open-file
    /// limit, `ulimit -n`, minus a few dozen for the server's own files).
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_connections: usize,
    /// Connections open at once from one IP address (devices behind one NAT share one);
    /// more are closed at once.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_connections_per_address: usize,
    /// Serve the fleet dashboard (HTML for operators' browsers, plain HTTP, no client
    /// certificate) on this loopback address, e.g. 127.0.0.1:8445; operators sign in with a
    /// link from `mtlsgate admin login-link`. Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub dashboard_listen: Option<String>,
    /// Refuse enrollments without a token (no approval queue): devices need a token.
    #[arg(long)]
    pub no_approval_queue: bool,
    /// PEM file of CA certificates (a manufacturer's, say) whose client certificates may
    /// enroll over EST without a token: such a device waits in the approval queue under the
    /// device ID its certificate's CN names, and collects its certificate once approved.
    #[arg(long, value_name = "FILE")]
    pub est_bootstrap_ca: Option<PathBuf>,
    /// At most this many devices wait for approval at once; more are refused (429).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub pending_limit: u64,
    /// A registration not approved within this is removed.
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    pub pending_ttl: String,
    /// Enrollments without a token one address may make at once (then 429)…
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub enroll_burst: u32,
    /// …and one more each time this has passed.
    #[arg(long, default_value = "1m", value_name = "DURATION")]
    pub enroll_refill: String,
    /// Tidy the inventory this often, as `mtlsgate ca tidy` does (first right after the
    /// start); `off` never does.
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub tidy_every: String,
    #[command(flatten)]
    pub retention: RetentionFlags,
}

/// What a tidy keeps (`ca tidy`, and `ca serve`'s scheduled tidy).
#[derive(Args, Debug, Clone)]
pub struct RetentionFlags {
    /// Certificates expired longer ago than this are removed, revoked ones too (a CRL
    /// lists a revoked certificate until it expires, and this long after). Certificates
    /// still valid, the CA's own and each device's current one are never removed.
    #[arg(long, default_value = "30d", value_name = "DURATION")]
    pub keep_expired: String,
    /// Audit records older than this are written to --audit-export, then removed.
    #[arg(long, default_value = "365d", value_name = "DURATION")]
    pub keep_audit: String,
    /// Directory the audit records older than --keep-audit go to, as JSON lines, one file
    /// per tidy (audit-FIRST-LAST.jsonl, by record number) [default: DIR/audit].
    #[arg(long, value_name = "DIR")]
    pub audit_export: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(after_help = "Example:
  mtlsgate ca tidy --dir ca --dry-run      # what would go
  mtlsgate ca tidy --dir ca --keep-expired 90d --audit-export /var/backups/mtlsgate-audit

A revoked certificate stays (and stays in every CRL) until it has expired, plus
--keep-expired. An audit record is removed only once it is in the export file; when the
file cannot be written, nothing is removed. On SQLite the freed space is given back to the
file system (the first tidy of an inventory made by an older mtlsgate rewrites the file
once, with VACUUM).")]
pub struct CaTidy {
    #[command(flatten)]
    pub ca: CaDir,
    #[command(flatten)]
    pub db: Database,
    #[command(flatten)]
    pub retention: RetentionFlags,
    /// Say what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct CaInit {
    #[command(flatten)]
    pub ca: CaDir,
    /// Organisation name; the CAs are called "NAME Root CA" and "NAME Intermediate CA".
    #[arg(long, default_value = "mtlsgate")]
    pub name: String,
    /// Key algorithm for the CA keys.
    #[arg(long, value_enum, default_value_t = KeyTypeArg::P256)]
    pub key_type: KeyTypeArg,
    /// Domain appended to device IDs: `--device-id dev1` becomes dev1.DOMAIN.
    #[arg(long, default_value = mtlsgate_pki::ca::DEFAULT_DEVICE_DOMAIN, value_name = "DOMAIN")]
    pub device_domain: String,
    /// Encrypt the CA keys (PKCS#8, PBES2 AES-256) with the passphrase on this file's first line.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Encrypt the CA keys with a passphrase asked for at the terminal (twice). Later
    /// commands that sign ask for it at a terminal too, or read --passphrase-file.
    #[arg(long, conflicts_with = "passphrase_file")]
    pub encrypt: bool,
    /// Root CA validity.
    #[arg(long, default_value = "10y", value_name = "DURATION")]
    pub root_valid: String,
    /// Intermediate CA validity.
    #[arg(long, default_value = "5y", value_name = "DURATION")]
    pub intermediate_valid: String,
    /// Keep the inventory in this PostgreSQL database (it must hold no inventory yet)
    /// instead of DIR/inventory.db. Recorded in DIR/ca.toml without its password: later
    /// commands find it, and need --database again only for a URL with a password.
    #[arg(long, env = "MTLSGATE_DATABASE", value_name = "URL")]
    pub database: Option<String>,
}

#[derive(Args, Debug)]
pub struct CaList {
    #[command(flatten)]
    pub ca: CaDir,
    #[command(flatten)]
    pub db: Database,
    /// Only certificates that are valid, revoked or expired.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// Only certificates of this kind: root, intermediate, server, client, admin.
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Only certificates whose serial starts with these hex digits.
    #[arg(long, value_name = "HEX")]
    pub serial: Option<String>,
    /// Only certificates whose subject contains this text (e.g. `CN=dev1`).
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// Only certificates that expire within this time, e.g. 30d.
    #[arg(long, value_name = "DURATION")]
    pub expiring: Option<String>,
    #[command(flatten)]
    pub output: crate::listing::ListOutput,
}

#[derive(Args, Debug)]
pub struct CaRevoke {
    #[command(flatten)]
    pub ca: CaDir,
    #[command(flatten)]
    pub db: Database,
    /// Serial number (hex, as `ca list` shows it).
    #[arg(required_unless_present = "cert", conflicts_with = "cert")]
    pub serial: Option<String>,
    /// Certificate file to revoke instead of a serial.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Reason: unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation.
    #[arg(long, default_value = "unspecified")]
    pub reason: String,
}

#[derive(Args, Debug)]
pub struct CaCrl {
    #[command(flatten)]
    pub ca: CaDir,
    #[command(flatten)]
    pub db: Database,
    #[command(flatten)]
    pub pass: Passphrase,
    /// Write to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// DER instead of PEM (the intermediate's CRL only: DER holds one CRL).
    #[arg(long)]
    pub der: bool,
    /// How long the CRL stays valid (its nextUpdate).
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    pub next_update: String,
}
