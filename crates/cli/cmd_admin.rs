//! `mtlsgate admin login-link`: a one-time link to the fleet dashboard, made in the CA's
//! inventory (the dashboard of `ca serve` reads the same one).

use std::process::ExitCode;

use anyhow::{Context, Result};
use mtlsgate_pki::certinfo::human_time;
use mtlsgate_pki::duration::parse_duration;
use time::OffsetDateTime;

use crate::block_on;
use crate::flags::{AdminCommand, AdminLoginLink};
use crate::fleet::{actor, open_authority};

pub fn run(cmd: AdminCommand) -> Result<ExitCode> {
    match cmd {
        AdminCommand::LoginLink(a) => login_link(a),
    }
}

fn login_link(a: AdminLoginLink) -> Result<ExitCode> {
    let ttl = parse_duration(&a.ttl).context("--ttl")?.whole_seconds();
    mtlsgate_dashboard::check_operator(&a.user)?;
    let url = a.url.trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        anyhow::bail!(
            "--url {url}: expected http://HOST:PORT, where the browser reaches the dashboard"
        );
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let link = block_on(async {
        let auth = open_authority(&a.ca.dir, &a.db).await?;
        let r =
            mtlsgate_dashboard::create_login_link(auth.inventory(), &a.user, ttl, &actor(), now)
                .await;
        auth.close().await;
        anyhow::Ok(r?)
    })??;
    let until = OffsetDateTime::from_unix_timestamp(link.expires_at)
        .map(human_time)
        .unwrap_or_else(|_| link.expires_at.to_string());
    println!(
        "Dashboard login link for {}, single use, valid until {until}:",
        a.user
    );
    println!("{url}/login?token={}", link.token);
    Ok(ExitCode::SUCCESS)
}
