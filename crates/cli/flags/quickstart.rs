//! `mtlsgate quickstart`: the demo of the whole system.

use std::path::PathBuf;

use clap::Args;

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
