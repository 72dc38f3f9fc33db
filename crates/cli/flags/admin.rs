//! `mtlsgate admin …`: operators' access to the fleet dashboard.

use clap::{Args, Subcommand};

use super::{CaDir, Database};

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Print a one-time link that signs an operator in to the fleet dashboard
    /// (`ca serve --dashboard-listen`).
    LoginLink(AdminLoginLink),
}

#[derive(Args, Debug)]
#[command(after_help = "Example:
  mtlsgate ca serve --dir ca --listen 0.0.0.0:8444 --dashboard-listen 127.0.0.1:8445
  mtlsgate admin login-link --dir ca --user alice
  # from another machine: ssh -L 8445:127.0.0.1:8445 ca-host, then open the link

The link works once, within --ttl; the inventory keeps only its hash. What the operator
does in the dashboard is recorded in the audit log as dashboard:NAME. Once signed in, the
operator can register a passkey on the Account page and sign in with it from then on;
passkeys work at http://localhost:PORT (their relying party is localhost), not at
http://127.0.0.1:PORT.")]
pub struct AdminLoginLink {
    #[command(flatten)]
    pub ca: CaDir,
    #[command(flatten)]
    pub db: Database,
    /// The operator's name (1 to 64 letters, digits and . _ @ -), as the audit log shows it.
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// Where the browser reaches the dashboard (keep `localhost`: passkeys work there only).
    #[arg(long, default_value = "http://localhost:8445", value_name = "URL")]
    pub url: String,
    /// How long the link stays usable (1 minute to 24 hours).
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    pub ttl: String,
}
