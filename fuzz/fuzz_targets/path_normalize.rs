//! `path::normalize`: no panic, and the rule's promises hold. The result is normalised
//! (normalising it again changes nothing), has no empty, `.` or `..` segment and no byte
//! the rule refuses, and its encoding is canonical and a valid route prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mtlsgate_proxy::internal::{check_prefix, normalize};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(n) = normalize(raw) else {
        return;
    };
    let d = n.decoded();
    assert!(d.starts_with(b"/"), "{raw:?}");
    assert!(!d.windows(2).any(|w| w == b"//"), "{raw:?} -> {d:?}");
    for seg in d.split(|b| *b == b'/').skip(1) {
        assert!(seg != b"." && seg != b"..", "{raw:?} -> {d:?}");
    }
    assert!(
        !d.iter().any(|b| matches!(b, b'\\' | b';' | 0..=0x1f | 0x7f)),
        "{raw:?} -> {d:?}"
    );
    let e = n.encoded();
    assert!(e.is_ascii() && !e.contains('?') && !e.contains('#'), "{e}");
    let again = normalize(e).expect("a normalised path normalises");
    assert_eq!(again, n, "{raw:?}");
    check_prefix(e).expect("a normalised path is a valid prefix");
    assert_eq!(n.encoded_after(0), e);
    assert_eq!(n.encoded_after(d.len()), "");
});
