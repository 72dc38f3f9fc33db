//! `mtlsgate token …`: enrollment tokens.

use clap::{Args, Subcommand};

use super::FleetTarget;

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
