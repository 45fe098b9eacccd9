//! The :443 front door's ClientHello parser on arbitrary bytes: never panics, and its answers
//! are consistent (a complete hello stays parsed with bytes appended; a smaller limit can only
//! make it fail).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::wire::client_hello::{HelloError, parse};

/// The default `limits.maxClientHelloBytes`.
const MAX: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    let full = parse(data, MAX);
    // The CRD's lowest accepted limit.
    let small = parse(data, 512);
    if let Ok(hello) = &full {
        // Trailing bytes (the client's next flight) are ignored.
        let mut more = data.to_vec();
        more.extend_from_slice(b"\x17\x03\x03\x00\x01x");
        assert_eq!(parse(&more, MAX).ok().as_ref(), Some(hello));
        if let Ok(small) = &small {
            assert_eq!(small, hello);
        }
        if let Some(sni) = &hello.sni {
            // The SNI is normalized: lower-case printable ASCII.
            assert!(
                sni.bytes()
                    .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase())
            );
        }
    } else if let Ok(hello) = &small {
        panic!("parsed under the 512-byte limit but not under 16 KiB: {hello:?} / {full:?}");
    }
    if data.is_empty() {
        assert!(matches!(full, Err(HelloError::Incomplete)));
    }
});
