//! The PROXY protocol (HAProxy's spec, v1 text and v2 binary).
//!
//! Outgoing: pass-through backends may ask for a header (`portcullis.io/proxy-protocol`) telling
//! them the client's address, since they cannot see `X-Forwarded-For` inside TLS.
//!
//! Incoming: a load balancer in front of us (from `trusted_proxy_protocol` CIDRs only) sends a
//! header before anything else, on :80 and :443; its source becomes the client address. A trusted
//! source that sends no header, or a bad one, is closed: guessing would let a client spoof.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Which PROXY protocol version to write (the `portcullis.io/proxy-protocol` annotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    V1,
    V2,
}

use bytes::BufMut;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// The v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v1 starts with this.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// Longest v1 line, CRLF included (spec §2.1).
const V1_MAX: usize = 107;
/// Fixed part of a v2 header.
const V2_HEADER: usize = 16;
/// Longest v2 address + TLV block we accept. The spec allows 64 KiB; real load balancers send
/// addresses plus a few small TLVs.
const V2_MAX_PAYLOAD: usize = 4096;

/// A decoded incoming header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied connection: the original client and the address it connected to.
    Proxy {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The sender's own connection (v2 `LOCAL`, e.g. a health check), or an address family we
    /// cannot use (v1 `UNKNOWN`, v2 `AF_UNSPEC`/`AF_UNIX`): keep the real peer address.
    Local,
}

/// Why an incoming PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyProtocolError {
    /// A valid prefix so far: read more.
    #[error("PROXY header incomplete")]
    Incomplete,
    /// A trusted source sent something that is not a PROXY header.
    #[error("trusted source sent no PROXY protocol header")]
    Missing,
    /// It started like a PROXY header but is not a valid one.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// No complete header before the deadline.
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    /// The connection closed before a complete header.
    #[error("connection closed before a complete PROXY header")]
    Closed,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// Whether `peer` may send us a PROXY header (`trusted_proxy_protocol`).
fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|net| net.contains(&peer))
}

/// The client address of a new connection: `peer` itself, or, when `peer` is trusted, the source
/// of the PROXY header it must send first. Bytes read past the header are left in `buf`.
pub(crate) async fn client_address<IO>(
    io: &mut IO,
    peer: SocketAddr,
    trusted: &[IpNet],
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<SocketAddr, ProxyProtocolError>
where
    IO: AsyncRead + Unpin,
{
    if !is_trusted(peer.ip(), trusted) {
        return Ok(peer);
    }
    match read_header(io, buf, deadline).await? {
        ProxyHeader::Proxy { source, .. } => Ok(source),
        ProxyHeader::Local => Ok(peer),
    }
}

/// Reads one PROXY header (v1 or v2) from `io` under `deadline`, appending to `buf`. On success
/// the header is removed from `buf`, which keeps any bytes read past it.
async fn read_header<IO>(
    io: &mut IO,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<ProxyHeader, ProxyProtocolError>
where
    IO: AsyncRead + Unpin,
{
    let budget = deadline.saturating_duration_since(Instant::now());
    let read = async {
        loop {
            match decode(buf) {
                Ok((header, used)) => {
                    buf.drain(..used);
                    return Ok(header);
                }
                Err(ProxyProtocolError::Incomplete) => {}
                Err(e) => return Err(e),
            }
            // Small reads: a header is short, and what follows it is not ours to slurp.
            buf.reserve(512);
            let n = io.read_buf(&mut (&mut *buf).limit(512)).await?;
            if n == 0 {
                return Err(ProxyProtocolError::Closed);
            }
        }
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(result) => result,
        Err(_) => Err(ProxyProtocolError::Timeout(budget)),
    }
}

/// Decodes a header at the start of `buf`: the header and how many bytes it used.
pub fn decode(buf: &[u8]) -> Result<(ProxyHeader, usize), ProxyProtocolError> {
    // Does `buf` agree with `signature` as far as both go?
    let agrees = |signature: &[u8]| {
        let n = buf.len().min(signature.len());
        buf.get(..n) == signature.get(..n)
    };
    if buf.is_empty() {
        return Err(ProxyProtocolError::Incomplete);
    }
    if agrees(V1_PREFIX) {
        if buf.len() < V1_PREFIX.len() {
            return Err(ProxyProtocolError::Incomplete);
        }
        return decode_v1(buf);
    }
    if agrees(V2_SIGNATURE) {
        if buf.len() < V2_HEADER {
            return Err(ProxyProtocolError::Incomplete);
        }
        return decode_v2(buf);
    }
    Err(ProxyProtocolError::Missing)
}

fn decode_v1(buf: &[u8]) -> Result<(ProxyHeader, usize), ProxyProtocolError> {
    let window = buf.get(..buf.len().min(V1_MAX)).unwrap_or(buf);
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return Err(if buf.len() >= V1_MAX {
            ProxyProtocolError::Malformed("v1 line longer than 107 bytes")
        } else {
            ProxyProtocolError::Incomplete
        });
    };
    let used = end + 2;
    let line = window
        .get(..end)
        .and_then(|l| std::str::from_utf8(l).ok())
        .ok_or(ProxyProtocolError::Malformed("v1 line is not ASCII"))?;
    let mut parts = line.split(' ');
    let _proxy = parts.next();
    let header = match parts.next() {
        Some("UNKNOWN") => ProxyHeader::Local,
        Some(family @ ("TCP4" | "TCP6")) => {
            let fields: Vec<&str> = parts.collect();
            let [src, dst, sport, dport] = fields[..] else {
                return Err(ProxyProtocolError::Malformed(
                    "v1 needs four address fields",
                ));
            };
            let parse_ip = |s: &str| -> Result<IpAddr, ProxyProtocolError> {
                let ip = if family == "TCP4" {
                    s.parse::<Ipv4Addr>().map(IpAddr::V4)
                } else {
                    s.parse::<Ipv6Addr>().map(IpAddr::V6)
                };
                ip.map_err(|_| ProxyProtocolError::Malformed("v1 address does not match family"))
            };
            let parse_port = |s: &str| {
                s.parse::<u16>()
                    .map_err(|_| ProxyProtocolError::Malformed("v1 port is not 0-65535"))
            };
            ProxyHeader::Proxy {
                source: SocketAddr::new(parse_ip(src)?, parse_port(sport)?),
                destination: SocketAddr::new(parse_ip(dst)?, parse_port(dport)?),
            }
        }
        _ => {
            return Err(ProxyProtocolError::Malformed(
                "v1 protocol is not TCP4/TCP6/UNKNOWN",
            ));
        }
    };
    Ok((header, used))
}

fn decode_v2(buf: &[u8]) -> Result<(ProxyHeader, usize), ProxyProtocolError> {
    let Some(&[version_command, family, len_hi, len_lo]) = buf.get(12..V2_HEADER) else {
        return Err(ProxyProtocolError::Incomplete);
    };
    let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if version_command >> 4 != 2 {
        return Err(ProxyProtocolError::Malformed("v2 version nibble is not 2"));
    }
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyProtocolError::Malformed(
            "v2 payload longer than 4096 bytes",
        ));
    }
    let used = V2_HEADER + len;
    let payload = buf
        .get(V2_HEADER..used)
        .ok_or(ProxyProtocolError::Incomplete)?;
    let header = match version_command & 0x0f {
        0x0 => ProxyHeader::Local,
        0x1 => match family >> 4 {
            0x1 => {
                let a = payload
                    .get(..12)
                    .ok_or(ProxyProtocolError::Malformed("v2 IPv4 payload too short"))?;
                let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
                ProxyHeader::Proxy {
                    source: SocketAddr::new(ip(0), u16::from_be_bytes([a[8], a[9]])),
                    destination: SocketAddr::new(ip(4), u16::from_be_bytes([a[10], a[11]])),
                }
            }
            0x2 => {
                let a = payload
                    .get(..36)
                    .ok_or(ProxyProtocolError::Malformed("v2 IPv6 payload too short"))?;
                let ip = |o: usize| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&a[o..o + 16]);
                    IpAddr::V6(Ipv6Addr::from(octets))
                };
                ProxyHeader::Proxy {
                    source: SocketAddr::new(ip(0), u16::from_be_bytes([a[32], a[33]])),
                    destination: SocketAddr::new(ip(16), u16::from_be_bytes([a[34], a[35]])),
                }
            }
            // AF_UNSPEC, AF_UNIX: no address we could use.
            0x0 | 0x3 => ProxyHeader::Local,
            _ => return Err(ProxyProtocolError::Malformed("v2 unknown address family")),
        },
        _ => {
            return Err(ProxyProtocolError::Malformed(
                "v2 command is not LOCAL or PROXY",
            ));
        }
    };
    Ok((header, used))
}

/// Encodes the header `version` for a connection from `source` to `destination`.
pub(crate) fn encode(
    version: ProxyProtocol,
    source: SocketAddr,
    destination: SocketAddr,
) -> Vec<u8> {
    match version {
        ProxyProtocol::V1 => encode_v1(source, destination),
        ProxyProtocol::V2 => encode_v2(source, destination),
    }
}

/// Both addresses in one family: IPv4-mapped IPv6 becomes IPv4; a mixed pair becomes IPv6.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (s, d) = (canon(source), canon(destination));
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    if s.is_ipv4() == d.is_ipv4() {
        (s, d)
    } else {
        (v6(s), v6(d))
    }
}

/// A v1 text header: `PROXY TCP4 1.2.3.4 5.6.7.8 1234 443\r\n`.
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (s, d) = same_family(source, destination);
    let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        s.ip(),
        d.ip(),
        s.port(),
        d.port()
    )
    .into_bytes()
}

/// A v2 binary header, command PROXY, TCP over IPv4 or IPv6, no TLVs.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (s, d) = same_family(source, destination);
    let mut out = Vec::with_capacity(V2_HEADER + 36);
    out.extend_from_slice(V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match (s.ip(), d.ip()) {
        (IpAddr::V4(si), IpAddr::V4(di)) => {
            out.push(0x11); // AF_INET, STREAM
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&si.octets());
            out.extend_from_slice(&di.octets());
        }
        (si, di) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            out.push(0x21); // AF_INET6, STREAM
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(si));
            out.extend_from_slice(&v6(di));
        }
    }
    out.extend_from_slice(&s.port().to_be_bytes());
    out.extend_from_slice(&d.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_and_v2_round_trip_ipv4_and_ipv6() {
        for (s, d) in [
            ("192.0.2.1:51234", "198.51.100.7:443"),
            ("[2001:db8::1]:51234", "[2001:db8::2]:443"),
        ] {
            let (s, d) = (addr(s), addr(d));
            for encoded in [encode_v1(s, d), encode_v2(s, d)] {
                let mut with_data = encoded.clone();
                with_data.extend_from_slice(b"\x16\x03\x01");
                let (header, used) = decode(&with_data).unwrap();
                assert_eq!(
                    header,
                    ProxyHeader::Proxy {
                        source: s,
                        destination: d
                    }
                );
                assert_eq!(used, encoded.len());
                for cut in 0..encoded.len() {
                    assert!(
                        matches!(decode(&encoded[..cut]), Err(ProxyProtocolError::Incomplete)),
                        "cut {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn v1_text_is_exact() {
        assert_eq!(
            encode_v1(addr("10.0.0.1:1000"), addr("10.0.0.2:443")),
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 443\r\n"
        );
        // Mixed families become IPv6.
        assert_eq!(
            encode_v1(addr("10.0.0.1:1000"), addr("[::1]:443")),
            b"PROXY TCP6 ::ffff:10.0.0.1 ::1 1000 443\r\n"
        );
        // IPv4-mapped IPv6 is written as IPv4.
        assert_eq!(
            encode_v1(
                addr("[::ffff:10.0.0.1]:1000"),
                addr("[::ffff:10.0.0.2]:443")
            ),
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 443\r\n"
        );
    }

    #[test]
    fn local_unknown_missing_and_malformed() {
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(decode(&local).unwrap(), (ProxyHeader::Local, 16));
        assert_eq!(
            decode(b"PROXY UNKNOWN\r\nGET").unwrap(),
            (ProxyHeader::Local, 15)
        );
        assert!(matches!(
            decode(b"GET / HTTP/1.1\r\n"),
            Err(ProxyProtocolError::Missing)
        ));
        assert!(matches!(
            decode(b"\x16\x03\x01"),
            Err(ProxyProtocolError::Missing)
        ));
        assert!(matches!(
            decode(b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n"),
            Err(ProxyProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"PROXY TCP4 1.2.3.4 1.2.3.5 1 99999\r\n"),
            Err(ProxyProtocolError::Malformed(_))
        ));
        let mut long = b"PROXY ".to_vec();
        long.extend_from_slice(&[b'x'; 120]);
        assert!(matches!(
            decode(&long),
            Err(ProxyProtocolError::Malformed(_))
        ));
        let mut bad_version = V2_SIGNATURE.to_vec();
        bad_version.extend_from_slice(&[0x31, 0x11, 0x00, 0x0c]);
        assert!(matches!(
            decode(&bad_version),
            Err(ProxyProtocolError::Malformed(_))
        ));
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0x00, 0x04, 1, 2, 3, 4]);
        assert!(matches!(
            decode(&short),
            Err(ProxyProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        let mut h = encode_v2(addr("192.0.2.1:1"), addr("192.0.2.2:2"));
        h[15] += 7;
        h.extend_from_slice(&[0x04, 0x00, 0x04, 1, 2, 3, 4]);
        let (header, used) = decode(&h).unwrap();
        assert_eq!(used, h.len());
        assert!(matches!(header, ProxyHeader::Proxy { .. }));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let mut bytes: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
            if rng.bool() {
                let prefix: &[u8] = if rng.bool() {
                    V2_SIGNATURE
                } else {
                    b"PROXY TCP"
                };
                bytes.splice(0..0, prefix.iter().copied());
            }
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn trust_is_by_cidr_and_canonical() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(is_trusted("10.1.2.3".parse().unwrap(), &trusted));
        assert!(is_trusted("::ffff:10.1.2.3".parse().unwrap(), &trusted));
        assert!(!is_trusted("192.0.2.1".parse().unwrap(), &trusted));
        assert!(!is_trusted("10.1.2.3".parse().unwrap(), &[]));
    }
}
