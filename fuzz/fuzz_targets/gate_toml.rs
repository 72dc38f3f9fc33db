//! `GateConfig::from_toml`: gate.toml parsing and validation. No panic on any text (error
//! positions are byte offsets into it); a valid configuration differs from itself in no
//! setting.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mtlsgate_proxy::GateConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match GateConfig::from_toml("gate.toml", text, Path::new("/nonexistent/etc")) {
        Ok(c) => {
            assert!(c.changed_settings(&c).is_empty());
            let _ = c.watched_files();
        }
        Err(e) => {
            assert!(e.to_string().starts_with("gate.toml"), "{e}");
        }
    }
});
