//! `dist/install` and the systemd units: the binary lands stripped where the units point,
//! its debug information beside it, and every command a unit runs is one the binary takes.

use std::process::Command;

use crate::util::{bin, Work};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn install_puts_a_stripped_binary_where_every_unit_points() {
    let w = Work::new();
    let dest = w.path("root");
    let out = Command::new(format!("{ROOT}/dist/install"))
        .args(["--bin", &bin()])
        .env("DESTDIR", &dest)
        .output()
        .expect("dist/install");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = dest.join("usr/local/bin/mtlsgate");
    let debug = dest.join("usr/local/bin/mtlsgate.debug");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    assert!(size(&debug) > 0, "no debug information beside the binary");
    let sections = w
        .cmd("readelf", &["-S", &installed.display().to_string()])
        .ok();
    assert!(!sections.contains(".debug_info"), "not stripped");
    assert!(sections.contains(".gnu_debuglink"), "{sections}");
    // No staging directory is left behind.
    let left: Vec<_> = std::fs::read_dir(dest.join("usr/local/bin"))
        .expect("bin dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");

    let units = dest.join("etc/systemd/system");
    let mut seen = Vec::new();
    for name in [
        "mtlsgate-ca.service",
        "mtlsgate-gateway.service",
        "mtlsgate-agent.service",
        "mtlsgate-agent-renew.service",
    ] {
        let text = std::fs::read_to_string(units.join(name)).expect(name);
        for line in text.lines() {
            let Some((key, cmd)) = line.split_once('=') else {
                continue;
            };
            if !key.starts_with("Exec") {
                continue;
            }
            let words: Vec<&str> = cmd.split_whitespace().collect();
            if words.first() != Some(&"/usr/local/bin/mtlsgate") {
                continue;
            }
            // The unit's own arguments, with --help: clap refuses an unknown flag first.
            let mut args: Vec<&str> = words[1..].to_vec();
            args.push("--help");
            let r = w.cmd(&installed.display().to_string(), &args);
            assert_eq!(r.code, 0, "{name}: {cmd}: {}", r.stderr);
            seen.push(format!("{name}: {key}"));
        }
    }
    assert!(seen.len() >= 5, "{seen:?}");
}
