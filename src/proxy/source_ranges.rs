//! Allow and deny lists at the edge (nginx's access phase): a request, or a pass-through
//! connection, from an address the route's lists refuse never reaches the pod.
//!
//! The address judged is the real client's, found by the one function that finds it for
//! `X-Real-IP` ([`super::forward::request_client_ip`]): `X-Forwarded-For` only when the peer is
//! one of the class's `trustedForwardedCidrs`, the PROXY protocol source only when it came
//! from `trustedProxyProtocolCidrs` (already the connection's client), the socket peer
//! otherwise. A pass-through connection has no HTTP header: its client address is the one.

use std::net::IpAddr;

use http::HeaderMap;

use super::ConnInfo;
use super::error::{ClientFault, ProxyError};
use super::forward::request_client_ip;
use crate::table::RouteTable;
use crate::table::policy::RoutePolicy;
use crate::table::source_ranges::SourceRanges;

/// `Err` (403) when the route has lists and the request's real client address fails them.
/// Routes without lists cost one `is_none`.
pub(super) fn check(
    policy: &RoutePolicy,
    table: &RouteTable,
    conn: &ConnInfo,
    headers: &HeaderMap,
) -> Result<(), ProxyError> {
    let Some(ranges) = &policy.source_ranges else {
        return Ok(());
    };
    let client = request_client_ip(table, conn, headers);
    if ranges.admits(client) {
        Ok(())
    } else {
        Err(ClientFault::SourceDenied(client).into())
    }
}

/// Whether a pass-through connection from `client` may be spliced to the pod; `None` lists
/// admit everyone.
pub(super) fn admits_connection(ranges: Option<&SourceRanges>, client: IpAddr) -> bool {
    ranges.is_none_or(|r| r.admits(client))
}
