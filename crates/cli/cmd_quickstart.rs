//! `mtlsgate quickstart`: the README's first command. Creates a CA, a server certificate
//! for localhost and client certificates in a directory of their own, and shows how to use
//! them.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::flags::Quickstart;

fn run_self(args: &[&str]) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the mtlsgate executable")?;
    let out = std::process::Command::new(exe)
        .args(args)
        .output()
        .context("cannot run mtlsgate")?;
    if !out.status.success() {
        anyhow::bail!(
            "`mtlsgate {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub fn run(q: Quickstart) -> Result<ExitCode> {
    let dir = &q.dir;
    let ca = dir.join("ca");
    if ca.join("ca.toml").exists() {
        println!("Using the existing CA in {}", ca.display());
    } else {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        run_self(&[
            "ca",
            "init",
            "--dir",
            s(&ca)?,
            "--name",
            "mtlsgate quickstart",
            "--device-domain",
            "d.example.local",
        ])?;
        run_self(&[
            "cert",
            "issue",
            "server",
            "localhost",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--dir",
            s(&ca)?,
            "--out",
            s(dir)?,
        ])?;
        for id in ["dev1", "dev2"] {
            run_self(&[
                "cert",
                "issue",
                "client",
                id,
                "--device-id",
                id,
                "--dir",
                s(&ca)?,
                "--out",
                s(dir)?,
            ])?;
        }
        println!("Created a CA and certificates in {}", dir.display());
    }
    let d = dir.display();
    println!();
    println!("  CA bundle:          {d}/ca.crt");
    println!("  server certificate: {d}/localhost.crt (key {d}/localhost.key)");
    println!("  device dev1:        {d}/dev1.crt (device ID dev1.d.example.local)");
    println!("  device dev2:        {d}/dev2.crt (device ID dev2.d.example.local)");
    println!();
    println!("Try:");
    println!("  mtlsgate cert inspect {d}/dev1.crt");
    println!("  mtlsgate cert verify {d}/dev1.crt --ca {d}/ca.crt");
    println!("  mtlsgate ca list --dir {d}/ca");
    Ok(ExitCode::SUCCESS)
}

fn s(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not valid UTF-8", p.display()))
}
