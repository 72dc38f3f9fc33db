//! `mtlsgate devices …`: the device inventory, as an operator sees it.

use clap::{Args, Subcommand};

use super::FleetTarget;

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
    /// Record devices that already hold certificates (issued by this CA, or by a CA given
    /// with --ca) as active, each with its certificate; reports every file it skips and why.
    Import(DevicesImport),
}

#[derive(Args, Debug)]
pub struct DevicesImport {
    /// A directory of certificates (PEM or DER), one device per file, or one certificate
    /// file; the device ID is the certificate's CN.
    #[arg(
        value_name = "DIR|FILE",
        required_unless_present = "csv",
        conflicts_with = "csv"
    )]
    pub from: Option<std::path::PathBuf>,
    /// A CSV file of `device_id,certificate_file` lines (paths relative to the CSV file);
    /// each certificate must name its device ID in its CN.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<std::path::PathBuf>,
    /// A CA certificate to trust as the issuer of the imported certificates, besides this
    /// CA (repeatable). Gateways must trust it too (their --client-ca).
    #[arg(long = "ca", value_name = "FILE")]
    pub issuers: Vec<std::path::PathBuf>,
    /// A tag for every imported device (repeatable).
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,
    #[command(flatten)]
    pub target: FleetTarget,
}

#[derive(Args, Debug)]
pub struct DevicesList {
    /// Only devices with this status: pending, active, denied, revoked, quarantined.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// Only devices whose certificate expires within this time, e.g. 24h.
    #[arg(long, value_name = "DURATION")]
    pub expiring: Option<String>,
    /// Only devices with this tag.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// Only devices whose ID starts with this (e.g. `cam-`).
    #[arg(long, value_name = "TEXT")]
    pub prefix: Option<String>,
    /// Only devices whose ID contains this.
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    #[command(flatten)]
    pub output: crate::listing::ListOutput,
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
