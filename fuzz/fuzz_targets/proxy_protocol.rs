//! PROXY protocol header parser (`tlsfront::proxy_protocol::parse`).
//!
//! Input: raw bytes, parsed as they are (what a balancer, or anyone, could
//! send first on a connection); the same bytes also drive `arbitrary` to
//! build addresses and TLVs for the round trip.
//!
//! Properties of `parse(input)`:
//!  1. never panics;
//!  2. `Complete { consumed }`: 0 < consumed <= input length, and the header
//!     alone (`input[..consumed]`) parses to the same header and length;
//!     every shorter prefix is `Incomplete` with `at_least <= consumed` (a
//!     reader following the parser never reads past the header);
//!  3. `Incomplete { at_least }`: input length < at_least <= the longest
//!     header a version allows (107 bytes for v1, 16 + 65535 for v2).
//!
//! Round trip: addresses of one family (IPv4, IPv6, or "use the
//! connection") encoded as v1, and as v2 with arbitrary TLV bytes, then
//! followed by arbitrary trailing bytes (the ClientHello), parse back to
//! the same addresses, consuming exactly the encoded length.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tlsfront::proxy_protocol::{encode_v1, encode_v2, parse, Addresses, Parse, V1_MAX_LEN, V2_MAX_LEN};

#[derive(Arbitrary, Debug)]
enum Family {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
    Connection,
}

#[derive(Arbitrary, Debug)]
struct RoundTrip {
    family: Family,
    source_port: u16,
    destination_port: u16,
    tlvs: Vec<u8>,
    trailing: Vec<u8>,
}

fn check_parse(input: &[u8]) {
    match parse(input) {
        Err(_) => {}
        Ok(Parse::Incomplete { at_least }) => {
            assert!(at_least > input.len(), "Incomplete must ask for more than it got");
            assert!(
                at_least <= V1_MAX_LEN.max(V2_MAX_LEN),
                "at_least {at_least} beyond any header"
            );
            if input.first() == Some(&b'P') {
                assert!(at_least <= V1_MAX_LEN, "v1 at_least {at_least} beyond 107 bytes");
            }
        }
        Ok(Parse::Complete { header, consumed }) => {
            assert!(
                consumed > 0 && consumed <= input.len(),
                "consumed {consumed} of {}",
                input.len()
            );
            assert_eq!(
                parse(&input[..consumed]),
                Ok(Parse::Complete { header, consumed }),
                "the header alone parses differently"
            );
            // Every prefix needs more, and never more than the header's length.
            // Headers with long TLVs: a sample of prefixes keeps the target fast.
            let step = (consumed / 256).max(1);
            for k in (0..consumed).step_by(step) {
                match parse(&input[..k]) {
                    Ok(Parse::Incomplete { at_least }) => {
                        assert!(
                            at_least > k && at_least <= consumed,
                            "prefix {k}: at_least {at_least}, header {consumed}"
                        )
                    }
                    other => panic!("prefix {k} of a {consumed}-byte header: {other:?}"),
                }
            }
        }
    }
}

fn check_round_trip(rt: RoundTrip) {
    let addresses = match rt.family {
        Family::V4(s, d) => Addresses::Tcp {
            source: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(s)), rt.source_port),
            destination: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(d)), rt.destination_port),
        },
        Family::V6(s, d) => Addresses::Tcp {
            source: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(s)), rt.source_port),
            destination: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(d)), rt.destination_port),
        },
        Family::Connection => Addresses::Connection,
    };
    let mut encodings = vec![encode_v1(&addresses)];
    if let Some(v2) = encode_v2(&addresses, &rt.tlvs) {
        encodings.push(v2);
    }
    for encoded in encodings {
        let mut input = encoded.clone();
        input.extend_from_slice(&rt.trailing);
        match parse(&input) {
            Ok(Parse::Complete { header, consumed }) => {
                assert_eq!(header.addresses, addresses, "{encoded:?}");
                assert_eq!(consumed, encoded.len(), "{encoded:?}");
            }
            other => panic!("{addresses:?} encoded as {encoded:?}: {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check_parse(data);
    if let Ok(rt) = RoundTrip::arbitrary(&mut Unstructured::new(data)) {
        check_round_trip(rt);
    }
});
