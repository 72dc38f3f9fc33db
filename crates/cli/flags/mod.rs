//! Command-line flags: the clap tree for every subcommand, one file per command (and
//! `common` for the groups several share). Parsing only; the commands in `cmd_*` turn
//! these into library calls. The gateway's flags (`serve`, `tunnel`) take their defaults
//! and their restart-only list from `mtlsgate_proxy::config::settings`.

mod admin;
mod agent;
mod ca;
mod cert;
mod common;
mod devices;
mod login;
mod quickstart;
mod serve;
mod token;
mod tunnel;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub use admin::*;
pub use agent::*;
pub use ca::*;
pub use cert::*;
pub use common::*;
pub use devices::*;
pub use login::*;
pub use quickstart::*;
pub use serve::*;
pub use token::*;
pub use tunnel::*;

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
    /// List, inspect, approve, deny, allow, revoke, tag and import devices.
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
    /// Operators' access to the fleet dashboard: one-time login links.
    #[command(subcommand)]
    Admin(AdminCommand),
}

/// Parses the command line: the derived clap tree, with what comes from the gateway's
/// settings table added (the flags `serve --config` excludes).
pub fn parse() -> Cli {
    let cmd = command();
    Cli::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit())
}

/// The whole clap tree, as [`parse`] uses it.
pub fn command() -> clap::Command {
    Cli::command().mut_subcommand("serve", exclude_one_route_flags)
}
