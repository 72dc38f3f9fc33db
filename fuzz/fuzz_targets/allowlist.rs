//! Allowlist files (`whitelist.txt`): `policy::parse_list` and `Policy::build` reading the
//! same text from a file, at start-up and on reload.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mtlsgate_proxy::config::PolicyConfig;
use mtlsgate_proxy::internal::{parse_list, Load, Policy};

/// One scratch file per process, rewritten for every input.
fn scratch() -> &'static (tempfile::TempDir, PathBuf) {
    static S: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let path = dir.path().join("whitelist.txt");
        (dir, path)
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut n = 0;
        for id in parse_list(text) {
            n += 1;
            assert!(!id.is_empty());
            assert!(!id.contains('#'));
            assert_eq!(id, id.trim());
        }
        let (_, path) = scratch();
        std::fs::write(path, data).expect("write the scratch file");
        let cfg = PolicyConfig {
            allow_files: vec![path.clone()],
            ..PolicyConfig::default()
        };
        let p = Policy::build(&cfg, Load::Start).expect("a UTF-8 list always loads");
        assert!(p.len() <= n);
        assert!(!p.is_open());
        let ends = text.is_empty() || text.ends_with('\n');
        assert_eq!(Policy::build(&cfg, Load::Reload).is_ok(), ends);
    } else {
        let (_, path) = scratch();
        std::fs::write(path, data).expect("write the scratch file");
        let cfg = PolicyConfig {
            allow_files: vec![path.clone()],
            ..PolicyConfig::default()
        };
        let e = Policy::build(&cfg, Load::Start).expect_err("not UTF-8");
        assert!(!e.to_string().is_empty());
    }
});
