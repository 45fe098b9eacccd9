//! Host names as they arrive on the wire (SNI, `Host`, `:authority`), made comparable.

/// Normalizes a host from a Host header, `:authority` or SNI: strips a port and a trailing
/// dot, lower-cases. Returns `None` for an empty host.
pub fn normalize_host(raw: &str) -> Option<String> {
    let without_port = if raw.starts_with('[') {
        // IPv6 literal: keep the bracketed address, drop the port.
        match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    if trimmed.is_empty() {
        None
    } else {
        Some(trimmed.to_ascii_lowercase())
    }
}
