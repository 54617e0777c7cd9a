//! The PROXY protocol header (HAProxy's spec, versions 1 and 2), as a pure
//! parser over a byte buffer: no I/O, no clock, no allocation on the parse
//! path. `server` reads the socket; this module only says, for the bytes
//! read so far, "need at least N bytes", "a header of N bytes, carrying
//! these addresses", or "not a valid header".
//!
//! Hand-written rather than the `ppp` crate: the spec is short (a text line,
//! or 16 bytes and a length), and the reader must know the exact header
//! length before reading anything more, so that the TLS ClientHello behind
//! the header stays in the socket; that knowledge (`Parse::Incomplete`'s
//! lower bound) is half of a parser already. It adds no dependency either.
//!
//! What is accepted:
//! - v1: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, the same with `TCP6`,
//!   and `PROXY UNKNOWN…\r\n` (the rest of the line ignored, as the spec
//!   says); at most 107 bytes with the CRLF; single spaces; ports are 1–5
//!   decimal digits.
//! - v2: the 12-byte signature, version 2, command `LOCAL` (addresses
//!   ignored: a balancer's own health check) or `PROXY`; families INET and
//!   INET6 over STREAM carry addresses; UNSPEC and UNIX carry none that is
//!   an IP, so the connection's own peer is used. TLVs after the addresses
//!   are skipped without being interpreted (cloud balancers send their own).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest v1 header, CRLF included (the spec's limit).
pub const V1_MAX_LEN: usize = 107;

/// The first 12 bytes of every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header's fixed part: signature, version/command, family, length.
pub const V2_FIXED_LEN: usize = 16;

/// The longest v2 header: the fixed part and a 16-bit length.
pub const V2_MAX_LEN: usize = V2_FIXED_LEN + u16::MAX as usize;

const V1_PREFIX: &[u8] = b"PROXY ";

/// Which version of the protocol a header used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text line.
    V1,
    /// The binary form.
    V2,
}

/// What a header says about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses {
    /// Use the connection's own addresses: a v2 `LOCAL` command (health
    /// checks), v1 `UNKNOWN`, or a v2 family with no IP (UNSPEC, UNIX).
    Connection,
    /// The client (`source`) and the address it connected to (`destination`).
    Tcp {
        /// The original client.
        source: SocketAddr,
        /// Where the client connected (the balancer's address).
        destination: SocketAddr,
    },
}

/// A complete, valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// v1 or v2.
    pub version: Version,
    /// The addresses it carries.
    pub addresses: Addresses,
}

impl Header {
    /// The client address, when the header names one.
    pub fn source(&self) -> Option<SocketAddr> {
        match self.addresses {
            Addresses::Connection => None,
            Addresses::Tcp { source, .. } => Some(source),
        }
    }
}

/// The outcome of parsing the bytes read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// Every byte so far belongs to a header that is not complete yet; it is
    /// at least `at_least` bytes long in all (always more than was given), so
    /// reading up to that many bytes in all never reads past the header.
    Incomplete {
        /// A lower bound on the header's total length.
        at_least: usize,
    },
    /// A header, and its length: the bytes after `consumed` are the
    /// client's own (the TLS ClientHello).
    Complete {
        /// The header.
        header: Header,
        /// Its length in bytes (never more than was given).
        consumed: usize,
    },
}

/// Why bytes are not a PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The bytes start like neither version (e.g. a TLS ClientHello).
    NotProxyProtocol,
    /// A v1 line that breaks the grammar; the text says where.
    InvalidV1(&'static str),
    /// A v2 header that breaks the format; the text says where.
    InvalidV2(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NotProxyProtocol => f.write_str("no PROXY protocol header"),
            ParseError::InvalidV1(why) => write!(f, "invalid PROXY v1 header: {why}"),
            ParseError::InvalidV2(why) => write!(f, "invalid PROXY v2 header: {why}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Why a connection on a `listen.proxy_protocol` listener was closed before
/// TLS: the bounded `reason` label of `tlsfront_proxy_protocol_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The peer is not in `forwarded.trusted_proxies`.
    UntrustedPeer,
    /// The connection did not start with a header (e.g. plain TLS).
    Missing,
    /// A header that breaks the spec.
    Invalid,
    /// The header was not complete within `listen.proxy_protocol_timeout`.
    Timeout,
    /// The peer closed (or the socket failed) before the header was complete.
    Closed,
}

impl Rejection {
    /// Every reason, for registering the metric's series up front.
    pub const ALL: [Rejection; 5] = [
        Rejection::UntrustedPeer,
        Rejection::Missing,
        Rejection::Invalid,
        Rejection::Timeout,
        Rejection::Closed,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::UntrustedPeer => "untrusted_peer",
            Rejection::Missing => "missing",
            Rejection::Invalid => "invalid",
            Rejection::Timeout => "timeout",
            Rejection::Closed => "closed",
        }
    }
}

impl From<ParseError> for Rejection {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::NotProxyProtocol => Rejection::Missing,
            ParseError::InvalidV1(_) | ParseError::InvalidV2(_) => Rejection::Invalid,
        }
    }
}

/// Parses the start of `buf`. Errors as soon as an offending byte is seen,
/// so a peer sending something else is not waited for.
pub fn parse(buf: &[u8]) -> Result<Parse, ParseError> {
    let Some(&first) = buf.first() else {
        // The shortest header is v1 `PROXY UNKNOWN\r\n`.
        return Ok(Parse::Incomplete { at_least: 15 });
    };
    match first {
        b'P' => parse_v1(buf),
        b'\r' => parse_v2(buf),
        _ => Err(ParseError::NotProxyProtocol),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parse, ParseError> {
    let prefix_len = buf.len().min(V1_PREFIX.len());
    if buf[..prefix_len] != V1_PREFIX[..prefix_len] {
        return Err(ParseError::NotProxyProtocol);
    }
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if let Some(bad) = window.iter().find(|b| !(0x20..0x7f).contains(*b)) {
            return Err(ParseError::InvalidV1(if *bad == b'\n' {
                "line feed without carriage return"
            } else {
                "a byte that is not printable ASCII"
            }));
        }
        // The CRLF is at least two bytes away.
        if window.len() + 2 > V1_MAX_LEN {
            return Err(ParseError::InvalidV1("longer than 107 bytes"));
        }
        // The shortest line is "PROXY UNKNOWN\r\n".
        return Ok(Parse::Incomplete {
            at_least: (buf.len() + 2).max(15),
        });
    };
    let line = &window[..cr];
    if line.iter().any(|b| !(0x20..0x7f).contains(b)) {
        return Err(ParseError::InvalidV1("a byte that is not printable ASCII"));
    }
    match window.get(cr + 1) {
        Some(b'\n') => {}
        Some(_) => return Err(ParseError::InvalidV1("carriage return without line feed")),
        None if cr + 2 > V1_MAX_LEN => return Err(ParseError::InvalidV1("longer than 107 bytes")),
        None => return Ok(Parse::Incomplete { at_least: cr + 2 }),
    }
    let consumed = cr + 2;
    let header = |addresses| {
        Ok(Parse::Complete {
            header: Header {
                version: Version::V1,
                addresses,
            },
            consumed,
        })
    };
    let Some(rest) = line.strip_prefix(V1_PREFIX) else {
        // The CR came inside "PROXY ".
        return Err(ParseError::InvalidV1("no protocol after PROXY"));
    };
    // UNKNOWN: "the receiver must ignore anything presented before the CRLF".
    if rest == b"UNKNOWN" || rest.starts_with(b"UNKNOWN ") {
        return header(Addresses::Connection);
    }
    let mut fields = rest.split(|&b| b == b' ');
    let family = fields.next().unwrap_or_default();
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ParseError::InvalidV1(
            "expected TCP4|TCP6 <src> <dst> <sport> <dport> separated by single spaces",
        ));
    };
    let (src, dst): (IpAddr, IpAddr) = match family {
        b"TCP4" => (
            v1_field::<Ipv4Addr>(src, "source is not an IPv4 address")?.into(),
            v1_field::<Ipv4Addr>(dst, "destination is not an IPv4 address")?.into(),
        ),
        b"TCP6" => (
            v1_field::<Ipv6Addr>(src, "source is not an IPv6 address")?.into(),
            v1_field::<Ipv6Addr>(dst, "destination is not an IPv6 address")?.into(),
        ),
        _ => return Err(ParseError::InvalidV1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    header(Addresses::Tcp {
        source: SocketAddr::new(src, v1_port(sport)?),
        destination: SocketAddr::new(dst, v1_port(dport)?),
    })
}

fn v1_field<T: std::str::FromStr>(field: &[u8], why: &'static str) -> Result<T, ParseError> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError::InvalidV1(why))
}

fn v1_port(field: &[u8]) -> Result<u16, ParseError> {
    // Digits only: `u16::from_str` would also take a leading '+'.
    if field.is_empty() || field.len() > 5 || !field.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::InvalidV1("port is not a number from 0 to 65535"));
    }
    v1_field(field, "port is not a number from 0 to 65535")
}

fn parse_v2(buf: &[u8]) -> Result<Parse, ParseError> {
    let signature_len = buf.len().min(V2_SIGNATURE.len());
    if buf[..signature_len] != V2_SIGNATURE[..signature_len] {
        return Err(ParseError::NotProxyProtocol);
    }
    if let Some(&version_command) = buf.get(12) {
        if version_command >> 4 != 2 {
            return Err(ParseError::InvalidV2("version is not 2"));
        }
        if version_command & 0x0f > 1 {
            return Err(ParseError::InvalidV2("command is neither LOCAL nor PROXY"));
        }
    }
    let local = buf.get(12).is_some_and(|vc| vc & 0x0f == 0);
    // LOCAL: "the protocol block including the family ... is ignored".
    if let Some(&family_protocol) = buf.get(13).filter(|_| !local) {
        if family_protocol >> 4 > 3 || family_protocol & 0x0f > 2 {
            return Err(ParseError::InvalidV2("unknown address family or transport protocol"));
        }
    }
    if buf.len() < V2_FIXED_LEN {
        return Ok(Parse::Incomplete { at_least: V2_FIXED_LEN });
    }
    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let consumed = V2_FIXED_LEN + length;
    // Known before the addresses arrive: a PROXY header too short for its family.
    let needed = match buf[13] {
        _ if local => 0,
        0x11 => 12,
        0x21 => 36,
        0x31 => 216,
        // UNSPEC: no addresses.
        f if f >> 4 == 0 => 0,
        // INET/INET6/UNIX over DGRAM or UNSPEC transport: not a TCP connection.
        _ => return Err(ParseError::InvalidV2("PROXY command for a transport other than TCP")),
    };
    if length < needed {
        return Err(ParseError::InvalidV2("length too short for the address family"));
    }
    if buf.len() < consumed {
        return Ok(Parse::Incomplete { at_least: consumed });
    }
    let body = &buf[V2_FIXED_LEN..consumed];
    // Whatever follows the addresses is TLVs (or padding): tolerated, skipped.
    let addresses = match buf[13] {
        _ if local => Addresses::Connection,
        0x11 => {
            let ip = |at: usize| IpAddr::from([body[at], body[at + 1], body[at + 2], body[at + 3]]);
            Addresses::Tcp {
                source: SocketAddr::new(ip(0), port(&body[8..])),
                destination: SocketAddr::new(ip(4), port(&body[10..])),
            }
        }
        0x21 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[at..at + 16]);
                IpAddr::from(octets)
            };
            Addresses::Tcp {
                source: SocketAddr::new(ip(0), port(&body[32..])),
                destination: SocketAddr::new(ip(16), port(&body[34..])),
            }
        }
        _ => Addresses::Connection,
    };
    Ok(Parse::Complete {
        header: Header {
            version: Version::V2,
            addresses,
        },
        consumed,
    })
}

fn port(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

/// Encodes a v1 line: `TCP4`/`TCP6` by the source's family (both addresses
/// must be of one family, else `UNKNOWN`), `UNKNOWN` for [`Addresses::Connection`].
/// For tests and fuzzing: the round trip is a property of [`parse`].
pub fn encode_v1(addresses: &Addresses) -> Vec<u8> {
    let line = match addresses {
        Addresses::Tcp { source, destination } if source.is_ipv4() && destination.is_ipv4() => format!(
            "PROXY TCP4 {} {} {} {}\r\n",
            source.ip(),
            destination.ip(),
            source.port(),
            destination.port()
        ),
        Addresses::Tcp { source, destination } if source.is_ipv6() && destination.is_ipv6() => format!(
            "PROXY TCP6 {} {} {} {}\r\n",
            source.ip(),
            destination.ip(),
            source.port(),
            destination.port()
        ),
        _ => "PROXY UNKNOWN\r\n".to_string(),
    };
    line.into_bytes()
}

/// Encodes a v2 header: `LOCAL` for [`Addresses::Connection`], else `PROXY`
/// over TCP (INET or INET6 by the source's family; mixed families are
/// encoded as INET6 with IPv4-mapped addresses), followed by `tlvs`, which
/// are written as given. `None` if the result would exceed the 16-bit length.
/// For tests and fuzzing: the round trip is a property of [`parse`].
pub fn encode_v2(addresses: &Addresses, tlvs: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::with_capacity(36 + tlvs.len());
    let (command, family) = match addresses {
        Addresses::Connection => (0x20, 0x00),
        Addresses::Tcp { source, destination } => match (source.ip(), destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                body.extend_from_slice(&s.octets());
                body.extend_from_slice(&d.octets());
                (0x21, 0x11)
            }
            (s, d) => {
                let v6 = |ip: IpAddr| match ip {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                };
                body.extend_from_slice(&v6(s).octets());
                body.extend_from_slice(&v6(d).octets());
                (0x21, 0x21)
            }
        },
    };
    if let Addresses::Tcp { source, destination } = addresses {
        body.extend_from_slice(&source.port().to_be_bytes());
        body.extend_from_slice(&destination.port().to_be_bytes());
    }
    body.extend_from_slice(tlvs);
    let length = u16::try_from(body.len()).ok()?;
    let mut out = Vec::with_capacity(V2_FIXED_LEN + body.len());
    out.extend_from_slice(&V2_SIGNATURE);
    out.extend_from_slice(&[command, family]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Header, usize) {
        match parse(buf) {
            Ok(Parse::Complete { header, consumed }) => (header, consumed),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn tcp(source: &str, destination: &str) -> Addresses {
        Addresses::Tcp {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    #[test]
    fn v1_tcp4_and_tcp6_stop_at_the_crlf() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";
        let mut buf = line.to_vec();
        buf.extend_from_slice(b"\x16\x03\x01rest");
        let (header, consumed) = complete(&buf);
        assert_eq!(consumed, line.len());
        assert_eq!(header.version, Version::V1);
        assert_eq!(header.addresses, tcp("203.0.113.7:51234", "10.0.0.1:443"));
        let (header, _) = complete(b"PROXY TCP6 2001:db8::7 ::1 65535 0\r\n");
        assert_eq!(header.source(), Some("[2001:db8::7]:65535".parse().unwrap()));
    }

    #[test]
    fn v1_unknown_ignores_the_rest_of_the_line() {
        for line in [&b"PROXY UNKNOWN\r\n"[..], b"PROXY UNKNOWN ff:: 1.2.3.4 whatever\r\n"] {
            let (header, consumed) = complete(line);
            assert_eq!(header.addresses, Addresses::Connection);
            assert_eq!(consumed, line.len());
        }
    }

    #[test]
    fn v1_bad_lines_are_rejected() {
        for line in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"[..],
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY \xff\r\n",
            b"PROXY \r\n",
        ] {
            assert!(
                matches!(parse(line), Err(ParseError::InvalidV1(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(line),
                parse(line)
            );
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert_eq!(parse(&long), Err(ParseError::InvalidV1("longer than 107 bytes")));
        // 105 bytes and a CR: the LF would be byte 108.
        let mut edge = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 92]].concat();
        edge.push(b'\r');
        assert_eq!(edge.len(), 107);
        assert!(parse(&edge).is_err());
        // 107 bytes exactly, CRLF included, is the longest allowed.
        edge.pop();
        edge.pop();
        edge.extend_from_slice(b"\r\n");
        assert_eq!(complete(&edge).1, 107);
    }

    #[test]
    fn anything_else_is_not_a_header() {
        for buf in [
            &b"\x16\x03\x01\x02\x00"[..],
            b"GET / HTTP/1.1\r\n",
            b"PROXX",
            b"PROXY\r\n",
            b"\r\n\r\n\0\r\nQUIX\n",
        ] {
            assert_eq!(parse(buf), Err(ParseError::NotProxyProtocol), "{buf:?}");
        }
    }

    #[test]
    fn incomplete_never_points_past_the_header() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";
        let v2 = encode_v2(&tcp("203.0.113.7:51234", "10.0.0.1:443"), &[1, 0, 2, b'h', b'2']).unwrap();
        for full in [&v1[..], &v2] {
            for n in 0..full.len() {
                match parse(&full[..n]) {
                    Ok(Parse::Incomplete { at_least }) => {
                        assert!(at_least > n && at_least <= full.len(), "{n}: {at_least}")
                    }
                    other => panic!("prefix of {n} bytes: {other:?}"),
                }
            }
            assert_eq!(complete(full).1, full.len());
        }
    }

    #[test]
    fn v2_inet_and_inet6_with_tlvs() {
        // An AWS-style TLV (0xEA, VPC endpoint id) and a NOOP.
        let tlvs = [0xEA, 0, 4, 1, b'v', b'p', b'c', 0x04, 0, 1, 0];
        for addresses in [
            tcp("198.51.100.4:40000", "10.0.0.1:443"),
            tcp("[2001:db8::4]:40000", "[2001:db8::1]:443"),
        ] {
            let mut buf = encode_v2(&addresses, &tlvs).unwrap();
            let len = buf.len();
            buf.extend_from_slice(b"\x16\x03\x01");
            let (header, consumed) = complete(&buf);
            assert_eq!(
                (header.version, header.addresses, consumed),
                (Version::V2, addresses, len)
            );
        }
    }

    #[test]
    fn v2_local_and_addressless_families_use_the_connection() {
        // LOCAL, even with an address block and TLVs behind it.
        let mut local = encode_v2(&tcp("1.2.3.4:1", "5.6.7.8:2"), &[0xEA, 0, 0]).unwrap();
        local[12] = 0x20;
        assert_eq!(complete(&local).0.addresses, Addresses::Connection);
        // LOCAL ignores the family byte, whatever it holds.
        local[13] = 0xff;
        assert_eq!(complete(&local).0.addresses, Addresses::Connection);
        assert_eq!(complete(&encode_v2(&Addresses::Connection, &[]).unwrap()).1, 16);
        // PROXY with UNSPEC family, and with a UNIX address.
        let mut unspec = V2_SIGNATURE.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0, 0]);
        assert_eq!(complete(&unspec).0.addresses, Addresses::Connection);
        let mut unix = V2_SIGNATURE.to_vec();
        unix.extend_from_slice(&[0x21, 0x31, 0, 216]);
        unix.extend_from_slice(&[0; 216]);
        assert_eq!(complete(&unix).0.addresses, Addresses::Connection);
    }

    #[test]
    fn v2_bad_headers_are_rejected_early() {
        let good = encode_v2(&tcp("1.2.3.4:1", "5.6.7.8:2"), &[]).unwrap();
        let with = |at: usize, value: u8| {
            let mut b = good.clone();
            b[at] = value;
            b
        };
        for (bad, why) in [
            (with(12, 0x11), "version"),
            (with(12, 0x22), "command"),
            (with(13, 0x41), "family"),
            (with(13, 0x13), "protocol"),
            (with(13, 0x12), "UDP"),
            (with(15, 11), "length"),
        ] {
            assert!(matches!(parse(&bad), Err(ParseError::InvalidV2(_))), "{why}");
        }
        // Rejected from the 13th byte on, without waiting for the rest.
        assert!(parse(&with(12, 0x31)[..13]).is_err());
    }

    #[test]
    fn encoders_round_trip() {
        for addresses in [
            tcp("0.0.0.0:0", "255.255.255.255:65535"),
            tcp("[::]:1", "[ffff::1]:2"),
            tcp("[::ffff:1.2.3.4]:5", "[::1]:6"),
            Addresses::Connection,
        ] {
            let (h1, n1) = complete(&encode_v1(&addresses));
            assert_eq!(h1.addresses, addresses);
            assert_eq!(n1, encode_v1(&addresses).len());
            let v2 = encode_v2(&addresses, &[]).unwrap();
            assert_eq!(complete(&v2).0.addresses, addresses);
        }
        assert!(encode_v2(&Addresses::Connection, &[0; 65535]).is_some());
        assert!(encode_v2(&Addresses::Connection, &[0; 65536]).is_none());
    }
}
