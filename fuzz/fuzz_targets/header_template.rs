//! `HeaderTemplate::parse` (identity header values in nginx's variable syntax) and
//! `render`: no panic on any text; a template without `$` renders as its own text.
#![no_main]

use std::net::SocketAddr;

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use mtlsgate_proxy::internal::{HeaderTemplate, RenderCtx};
use mtlsgate_proxy::internal::VerifyOutcome;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let remote: SocketAddr = ([127, 0, 0, 1], 40000).into();
    let cx = RenderCtx {
        identity: None,
        outcome: &VerifyOutcome::None,
        remote,
        remote_ip: "127.0.0.1",
        host: "gate.example",
        request_uri: "/api/x?y=1",
        scheme: "https",
        tls_protocol: "TLSv1.3",
        tls_cipher: "TLS_AES_128_GCM_SHA256",
        resumed: false,
        now: time::OffsetDateTime::UNIX_EPOCH,
    };
    match HeaderTemplate::parse(text) {
        Ok(t) => {
            let rendered = t.render(&cx);
            if !text.contains('$') {
                let want = if text.is_empty() {
                    None
                } else {
                    HeaderValue::from_str(text).ok()
                };
                assert_eq!(rendered, want, "a literal template renders as itself");
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
        }
    }
});
