//! Allow and deny lists of client addresses, as ingress-nginx's `whitelist-source-range` /
//! `allowlist-source-range` and `denylist-source-range` ask for them (annotations.md,
//! "Denylist source range" and "Whitelist source range"): comma-separated CIDRs, a bare
//! address standing for itself. Validated and normalised when the annotations are read; the
//! proxy side is `crate::proxy::source_ranges`.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use serde::Serialize;

/// What [`parse_list`] accepts, for error messages.
pub(crate) const SYNTAX: &str = "a comma-separated list of IPv4 or IPv6 addresses or CIDRs, \
                                 like 10.0.0.0/8, 192.168.1.7, 2001:db8::/32";

/// The allow and deny lists of a route. ingress-nginx writes the deny rules first, then the
/// allow rules and a final `deny all` (nginx's access module stops at the first rule that
/// matches): a denied address is refused even when an allow-list also covers it, and with an
/// allow-list, an address outside it is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct SourceRanges {
    /// Empty: no allow-list (every address not denied is admitted).
    pub(crate) allow: Vec<IpNet>,
    pub(crate) deny: Vec<IpNet>,
}

impl SourceRanges {
    /// `None` when neither list says anything: the route costs the proxy nothing.
    pub(crate) fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Option<SourceRanges> {
        (!allow.is_empty() || !deny.is_empty()).then(|| SourceRanges {
            allow: IpNet::aggregate(&allow),
            deny: IpNet::aggregate(&deny),
        })
    }

    /// Whether `client` may reach the route: not denied, and inside the allow-list if there
    /// is one. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, a dual-stack socket's view of
    /// an IPv4 peer) is judged as the IPv4 address it is.
    pub(crate) fn admits(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        let covers = |list: &[IpNet]| list.iter().any(|net| net.contains(&client));
        !covers(&self.deny) && (self.allow.is_empty() || covers(&self.allow))
    }

    /// The line for `check` and the admin API ("refused": 403 on HTTP hosts, closed on
    /// pass-through ones).
    pub(crate) fn describe(&self) -> String {
        let text = |list: &[IpNet]| {
            list.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (self.allow.is_empty(), self.deny.is_empty()) {
            (false, true) => format!("source ranges: only {} admitted", text(&self.allow)),
            (true, false) => format!("source ranges: {} refused", text(&self.deny)),
            _ => format!(
                "source ranges: {} refused, then only {} admitted",
                text(&self.deny),
                text(&self.allow)
            ),
        }
    }
}

/// Parses a comma-separated list of CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or bare addresses
/// (`/32`, `/128`); host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`, as Go's
/// `net.ParseCIDR`, which ingress-nginx uses, reads it). An IPv4-mapped IPv6 network
/// (`::ffff:10.0.0.0/104`) becomes the IPv4 one, matching how clients are judged. `None` when
/// an entry is not an address or CIDR, or when there is no entry at all (an empty list must
/// not silently mean "no restriction").
pub(crate) fn parse_list(value: &str) -> Option<Vec<IpNet>> {
    let mut nets = Vec::new();
    for entry in value.split(',') {
        let entry = entry.trim();
        let net = match entry.parse::<IpNet>() {
            Ok(net) => net.trunc(),
            Err(_) => IpNet::from(entry.parse::<IpAddr>().ok()?),
        };
        nets.push(canonical(net));
    }
    (!nets.is_empty()).then_some(nets)
}

/// An IPv4-mapped IPv6 network as the IPv4 network it covers.
fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(allow: &str, deny: &str) -> SourceRanges {
        let list = |v: &str| {
            if v.is_empty() {
                Vec::new()
            } else {
                parse_list(v).expect(v)
            }
        };
        SourceRanges::new(list(allow), list(deny)).expect("some list")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect(text)
    }

    #[test]
    fn parses_cidrs_and_bare_addresses() {
        let nets = parse_list(" 10.0.0.0/8,192.168.1.7 , 2001:db8::/32,::1").expect("valid");
        let text: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            ["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32", "::1/128"]
        );
        assert_eq!(
            parse_list("10.1.2.3/8").expect("host bits")[0].to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_list("::ffff:10.0.0.0/104").expect("mapped")[0].to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn refuses_what_is_not_a_cidr() {
        for bad in [
            "",
            " ",
            "10.0.0.0/8,",
            "10.0.0.0/33",
            "10.0.0",
            "example.com",
            "10.0.0.0/8;1.2.3.4",
            "2001:db8::/129",
            "*",
        ] {
            assert_eq!(parse_list(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn allow_list_admits_only_its_ranges() {
        let r = ranges("10.0.0.0/8, 2001:db8::/32", "");
        assert!(r.admits(ip("10.20.30.40")));
        assert!(!r.admits(ip("11.0.0.1")));
        assert!(r.admits(ip("2001:db8:1::5")));
        assert!(!r.admits(ip("2001:db9::1")));
        assert!(!r.admits(ip("::1")));
    }

    #[test]
    fn deny_is_checked_before_allow() {
        let r = ranges("10.0.0.0/8", "10.1.0.0/16, fe80::/10");
        assert!(!r.admits(ip("10.1.2.3")));
        assert!(r.admits(ip("10.2.2.3")));
        let deny_only = ranges("", "10.1.0.0/16, fe80::/10");
        assert!(deny_only.admits(ip("127.0.0.1")));
        assert!(deny_only.admits(ip("::1")));
        assert!(!deny_only.admits(ip("fe80::1234")));
    }

    #[test]
    fn ipv4_mapped_clients_are_judged_as_ipv4() {
        let r = ranges("127.0.0.1", "");
        assert!(r.admits(ip("::ffff:127.0.0.1")));
        let denied = ranges("", "127.0.0.0/8");
        assert!(!denied.admits(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn no_lists_is_no_policy() {
        assert_eq!(SourceRanges::new(Vec::new(), Vec::new()), None);
    }
}
