//! `mtlsgate cert …`: issuing, signing, bundling, inspecting and verifying certificates.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CaDir, Database, KeyTypeArg, LeafKind, Passphrase};

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
