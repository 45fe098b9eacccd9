//! Forwarding requests to upstreams: pooled clients, `X-Forwarded-*`, hop-by-hop hygiene.
//!
//! INTERFACE STUB — owned by the HTTP work; replace the body.

/// Pooled HTTP and HTTPS (re-encrypt) clients, kept across table swaps.
#[derive(Clone, Default)]
pub struct Clients {}

impl Clients {
    /// New, empty pools.
    pub fn new() -> Self {
        Clients {}
    }
}
