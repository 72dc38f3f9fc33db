//! Command-line flags: the clap tree for every subcommand. Parsing only; the
//! commands in `cmd_*` turn these into library calls.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mtlsgate_proxy::config::settings::defaults;

/// mtlsgate: mutual TLS for clients and devices — a private CA, certificates, a verifier
/// that explains failures, and an mTLS gateway in front of your app.
#[derive(Parser, Debug)]
#[command(name = "mtlsgate", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage the private CA: init, bundle, list, revoke, crl.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Issue, sign, bundle, inspect and verify certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Run the mTLS gateway: verify clients, enforce allowlists, forward identity headers.
    Serve(Box<Serve>),
    /// Carry TCP (MQTT and other non-HTTP protocols) over mTLS: terminate it in front of a
    /// backend (with --cert/--key), or open it to a remote (without).
    Tunnel(Box<Tunnel>),
    /// Set up a demo of the whole system (CA, CA server, a device enrolled by the agent,
    /// demo app, gateway consulting the inventory) and show what to try.
    Quickstart(Quickstart),
    /// Make enrollment tokens for devices.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List, inspect, approve, deny, allow, revoke and tag enrolled devices.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// The device side: enroll this device with `mtlsgate ca serve`, keep its certificate
    /// fresh, show who it is.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Remember a CA server and an administrator's certificate (checked against the server
    /// first), so that `devices …` and `token create` need no --server flags.
    Login(Login),
    /// Forget what `mtlsgate login` remembered.
    Logout,
}

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

/// `mtlsgate serve`: either `--config gate.toml`, or flags for the one-route case. The
/// flags are lowered into the same raw form gate.toml parses into, and validated once;
/// defaults come from `mtlsgate_proxy::config::settings::defaults`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  mtlsgate serve --listen 0.0.0.0:8443 --cert server.crt --key server.key \\
      --client-ca ca.crt --upstream http://127.0.0.1:8000 --allow-file whitelist.txt
  mtlsgate serve --config gate.toml
  mtlsgate serve --listen 127.0.0.1:8080 --upstream https://api.internal:8443 \\
      --upstream-ca ca.crt --upstream-cert client.crt --upstream-key client.key

Request paths are normalised before routing (percent-escapes decoded, // merged, . and ..
resolved) and the upstream receives the normalised path; %2F, backslashes, ; and .. above
the root are refused with 400.
Reload: SIGHUP, or change any certificate, key, CA, CRL, allowlist or config file. A reload
applies every setting except --listen, --admin-listen and --threads (restart for those).
Stop: SIGTERM or Ctrl-C finish in-flight requests first.")]
pub struct Serve {
    /// TOML configuration file (listeners, routes, policies). Excludes the one-route flags;
    /// --admin-listen and --threads override the file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["listen", "cert", "key", "key_passphrase_file", "client_ca", "trusted_ca", "upstream", "upstream_ca", "upstream_cert", "upstream_key", "upstream_key_passphrase_file", "upstream_server_name", "allow_file", "allow_device_id", "inventory", "allow_tag", "inventory_poll", "verify_client", "verify_depth", "crl", "crl_check", "pin_sha256", "no_resumption", "reject_at_handshake", "no_verify_cache", "access_log", "header", "xfcc", "host_header"])]
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

#[derive(Args, Debug)]
pub struct Quickstart {
    /// Directory for the demo's CA, certificates and allowlist.
    #[arg(long, default_value = "quickstart", value_name = "DIR")]
    pub dir: PathBuf,
    /// Where the demo gateway listens.
    #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR")]
    pub listen: String,
    /// Where the demo's CA server (`mtlsgate ca serve`) listens.
    #[arg(long, default_value = "127.0.0.1:8444", value_name = "ADDR")]
    pub ca_listen: String,
    /// Only create the CA and the certificates, and enroll dev1; leave nothing running.
    #[arg(long)]
    pub no_serve: bool,
}

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
and the admin API under /v1/devices and /v1/tokens (an administrator's client certificate:
admin.crt in the CA directory, or `mtlsgate cert issue admin NAME`).
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
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
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

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Issue a certificate and key: NAME.crt (leaf + intermediate), NAME.key (0600), ca.crt.
    #[command(subcommand)]
    Issue(IssueKind),
    /// Sign a CSR (for example from `openssl req -new`) and print or write the certificate.
    Sign(CertSign),
    /// Bundle a certificate chain and key as PKCS#12 (for curl --cert-type P12, keychains).
    P12(CertP12),
    /// Show what a certificate says: DNs as nginx prints them, SANs, device ID, fingerprints.
    Inspect(CertInspect),
    /// Verify a certificate as the gateway will, and say exactly why it fails.
    Verify(CertVerify),
}

#[derive(Subcommand, Debug)]
pub enum IssueKind {
    /// A server certificate (serverAuth) for NAME, with DNS/IP SANs.
    Server(IssueServer),
    /// A client certificate (clientAuth), optionally with a device ID and SPIFFE URI.
    Client(IssueClient),
    /// An administrator's client certificate (URI SAN urn:mtlsgate:role:admin), for the
    /// CA server's admin API.
    Admin(IssueAdmin),
}

#[derive(Args, Debug)]
pub struct IssueAdmin {
    /// Administrator name: the CN and the file name.
    pub name: String,
    #[command(flatten)]
    pub common: IssueCommon,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a single-use enrollment token; it is printed once, as the last line.
    Create(TokenCreate),
}

#[derive(Args, Debug)]
#[command(
    after_help = "The token is shown once and stored only as a hash. Give it to one device:
  mtlsgate agent enroll --server https://ca.example:8444 --token mtg_… --root-fingerprint SHA256
With --server URL the token is made by the CA server (`mtlsgate ca serve`), whose lifetimes
(--min-lifetime, --max-lifetime) apply to --lifetime."
)]
pub struct TokenCreate {
    /// Bind the token to this device ID (dev1 becomes dev1.<device domain>) [default: the
    /// CA assigns a random ID].
    #[arg(long, value_name = "ID")]
    pub device_id: Option<String>,
    /// How long the token can be used.
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub ttl: String,
    /// Tag for the device (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Lifetime of the device's certificates [default: the CA's, 24h].
    #[arg(long, value_name = "DURATION")]
    pub lifetime: Option<String>,
    #[command(flatten)]
    pub target: FleetTarget,
}

#[derive(Subcommand, Debug)]
pub enum DevicesCommand {
    /// List devices.
    List(DevicesList),
    /// Show one device: status, certificates, tags and its audit trail.
    Show(DevicesShow),
    /// Approve a pending device: it collects its certificate at its next poll.
    Approve(DevicesChange),
    /// Allow a denied or quarantined device again; a revoked device ID may then enroll again
    /// with a new token (it stays revoked, and so do its certificates, until it does).
    Allow(DevicesChange),
    /// Deny a pending or active device (gateways refuse it; it can be allowed again).
    Deny(DevicesChange),
    /// Revoke a device, and its certificates with it (for good: its ID enrolls again only
    /// after `devices allow ID` and a new token).
    Revoke(DevicesChange),
    /// Add or remove tags.
    Tag(DevicesTag),
}

#[derive(Args, Debug)]
pub struct DevicesList {
    /// Only devices with this status: pending, active, denied, revoked, quarantined.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// Only devices whose certificate expires within this time, e.g. 24h.
    #[arg(long, value_name = "DURATION")]
    pub expiring: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: FleetTarget,
}

#[derive(Args, Debug)]
pub struct DevicesShow {
    /// Device ID (dev1 or dev1.<device domain>).
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: FleetTarget,
}

#[derive(Args, Debug)]
pub struct DevicesChange {
    /// Device ID (dev1 or dev1.<device domain>).
    pub id: String,
    /// Why (kept in the audit trail).
    #[arg(long)]
    pub reason: Option<String>,
    /// Print the device as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: FleetTarget,
}

#[derive(Args, Debug)]
pub struct DevicesTag {
    /// Device ID (dev1 or dev1.<device domain>).
    pub id: String,
    /// Tag to add (repeatable).
    #[arg(long, value_name = "TAG")]
    pub add: Vec<String>,
    /// Tag to remove (repeatable).
    #[arg(long, value_name = "TAG")]
    pub remove: Vec<String>,
    /// Print the device as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: FleetTarget,
}

#[derive(Args, Debug)]
pub struct IssueCommon {
    #[command(flatten)]
    pub ca: CaDir,
    #[command(flatten)]
    pub db: Database,
    #[command(flatten)]
    pub pass: Passphrase,
    /// Directory to write NAME.crt, NAME.key and ca.crt into.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub out: PathBuf,
    /// Validity, like 24h, 7d, 90d, 1y [default: 7d for clients, 90d for servers].
    #[arg(long, value_name = "DURATION")]
    pub valid: Option<String>,
    /// Key algorithm of the new key.
    #[arg(long, value_enum, default_value_t = KeyTypeArg::P256)]
    pub key_type: KeyTypeArg,
    /// Replace NAME.crt and NAME.key if they exist, and a ca.crt that holds another CA's
    /// certificates.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct IssueServer {
    /// Server name: the CN, the file name, and the DNS SAN when no --dns/--ip is given.
    pub name: String,
    /// DNS name to put in the SAN (repeatable).
    #[arg(long, value_name = "NAME")]
    pub dns: Vec<String>,
    /// IP address to put in the SAN (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub ip: Vec<IpAddr>,
    #[command(flatten)]
    pub common: IssueCommon,
}

#[derive(Args, Debug)]
pub struct IssueClient {
    /// Client name: the file name, and the CN when no --device-id is given.
    pub name: String,
    /// Device ID; `dev1` becomes dev1.<device domain>, in the CN and a DNS SAN.
    #[arg(long, value_name = "ID")]
    pub device_id: Option<String>,
    /// URI SAN, e.g. spiffe://example.org/ns/prod/sa/api (repeatable).
    #[arg(long, value_name = "URI")]
    pub uri: Vec<String>,
    /// Extra DNS SAN (repeatable).
    #[arg(long, value_name = "NAME")]
    pub dns: Vec<String>,
    #[command(flatten)]
    pub common: IssueCommon,
}

#[derive(Args, Debug)]
pub struct CertSign {
    /// The CSR file (PEM or DER).
    pub csr: PathBuf,
    /// What the certificate is for.
    #[arg(long, value_enum)]
    pub kind: LeafKind,
    #[command(flatten)]
    pub ca: CaDir,
    #[command(flatten)]
    pub db: Database,
    #[command(flatten)]
    pub pass: Passphrase,
    /// Write the certificate chain (leaf + intermediate) here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Validity [default: 7d for clients, 90d for servers].
    #[arg(long, value_name = "DURATION")]
    pub valid: Option<String>,
}

#[derive(Args, Debug)]
pub struct CertP12 {
    /// Certificate file (leaf first, then its chain).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Private key file.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// PKCS#12 file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// File whose first line is the PKCS#12 password.
    #[arg(long, value_name = "FILE")]
    pub password_file: PathBuf,
    /// 3DES + SHA-1 MAC, for old macOS keychains and Java (weaker; use only when needed).
    #[arg(long)]
    pub legacy: bool,
    /// Friendly name shown by keychains [default: the certificate's CN].
    #[arg(long)]
    pub name: Option<String>,
    /// Passphrase file for an encrypted private key.
    #[arg(long, value_name = "FILE")]
    pub key_passphrase_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CertInspect {
    /// Certificate file (PEM or DER); with a chain, every certificate is shown.
    pub file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CertVerify {
    /// Certificate file: the leaf, optionally followed by intermediates.
    pub file: PathBuf,
    /// Trust bundle (PEM): the CA certificates, or pinned certificates.
    #[arg(long = "ca", value_name = "BUNDLE")]
    pub ca: PathBuf,
    /// CRL file(s) to check revocation against.
    #[arg(long, value_name = "FILE")]
    pub crl: Vec<PathBuf>,
    /// What the certificate must be good for [default: client, or server with --name].
    #[arg(long, value_enum)]
    pub purpose: Option<LeafKind>,
    /// Maximum chain depth below the leaf, like nginx ssl_verify_depth.
    #[arg(long, default_value_t = mtlsgate_pki::verify::DEFAULT_DEPTH)]
    pub depth: usize,
    /// Verify as of this time instead of now: RFC 3339 (2030-01-31T12:00:00Z) or Unix
    /// seconds.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Also check that the leaf is valid for this DNS name or IP address, as a TLS client
    /// checks a server (subject alternative names only); implies --purpose server.
    #[arg(long, value_name = "HOST")]
    pub name: Option<String>,
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

Without a token the device waits for an operator: `mtlsgate devices approve ID` on the CA.
The key is made on this device and never leaves it. A failed enrollment leaves the state
directory as it was.")]
pub struct AgentEnroll {
    /// The CA server (`mtlsgate ca serve`), https://HOST[:PORT].
    #[arg(long, value_name = "URL")]
    pub server: String,
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
