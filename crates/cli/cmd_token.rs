//! `mtlsgate token create`: a single-use enrollment token, printed once as the last line.

use std::process::ExitCode;

use anyhow::{Context, Result};
use mtlsgate_authority::TokenRequest;
use mtlsgate_pki::certinfo::{human_duration, human_time};
use mtlsgate_pki::duration::parse_duration;
use time::OffsetDateTime;

use crate::block_on;
use crate::flags::{TokenCommand, TokenCreate};
use crate::fleet::Fleet;

pub fn run(cmd: TokenCommand) -> Result<ExitCode> {
    match cmd {
        TokenCommand::Create(c) => create(c),
    }
}

fn create(c: TokenCreate) -> Result<ExitCode> {
    let ttl = parse_duration(&c.ttl).context("--ttl")?;
    let lifetime = match &c.lifetime {
        Some(l) => Some(parse_duration(l).context("--lifetime")?),
        None => None,
    };
    let made = block_on(async {
        let fleet = Fleet::open(&c.target).await?;
        let r = fleet
            .create_token(TokenRequest {
                device_id: c.device_id.clone(),
                tags: c.tags.clone(),
                ttl,
                lifetime,
            })
            .await;
        fleet.close().await;
        r
    })??;
    let until = OffsetDateTime::from_unix_timestamp(made.expires_at)
        .map(human_time)
        .unwrap_or_else(|_| made.expires_at.to_string());
    match &made.device_id {
        Some(id) => println!("Enrollment token for device {id}, single use, valid until {until}."),
        None => println!(
            "Enrollment token for one new device (the CA assigns its ID), single use, valid until {until}."
        ),
    }
    if !made.tags.is_empty() {
        println!("The device gets the tags: {}", made.tags.join(", "));
    }
    if let Some(secs) = made.lifetime_secs {
        println!("Its certificates live {} each.", human_duration(secs));
    }
    println!("It is shown only now; the inventory keeps only its hash.");
    println!("{}", made.token);
    Ok(ExitCode::SUCCESS)
}
