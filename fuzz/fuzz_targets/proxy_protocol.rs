//! The incoming PROXY protocol (v1 text, v2 binary) decoder on arbitrary bytes: never panics,
//! never claims more bytes than it was given, and what it decodes re-encodes to a header that
//! decodes to the same addresses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::wire::proxy_protocol::{ProxyHeader, decode, encode_v1, encode_v2};

fuzz_target!(|data: &[u8]| {
    let Ok((header, used)) = decode(data) else {
        return;
    };
    assert!(
        used > 0 && used <= data.len(),
        "used {used} of {}",
        data.len()
    );
    // Decoding is a function of the header bytes alone.
    let (again, used_again) = decode(&data[..used]).expect("the header on its own decodes");
    assert_eq!((again, used_again), (header, used));
    if let ProxyHeader::Proxy {
        source,
        destination,
    } = header
    {
        for encoded in [
            encode_v1(source, destination),
            encode_v2(source, destination),
        ] {
            let (first, n) = decode(&encoded).expect("our own header decodes");
            assert_eq!(n, encoded.len());
            let ProxyHeader::Proxy {
                source: s,
                destination: d,
            } = first
            else {
                panic!("our header decoded as LOCAL: {encoded:?}");
            };
            // Families may be unified (IPv4-mapped, mixed pairs); ports and canonical IPs stay.
            assert_eq!((s.port(), d.port()), (source.port(), destination.port()));
            assert_eq!(s.ip().to_canonical(), source.ip().to_canonical());
            assert_eq!(d.ip().to_canonical(), destination.ip().to_canonical());
        }
    }
});
