//! The one Host / `:authority` validator, called by every protocol before routing.
//!
//! RFC 9110 §7.2 and RFC 3986 §3.2.2: a host is a registered name, an IPv4 address or a
//! bracketed IPv6 address, with an optional decimal port. Userinfo (`user@host`, forbidden in
//! `:authority` by RFC 9113 §8.3.1 and RFC 9114 §4.3.1), a second colon outside brackets, an
//! unbalanced bracket, a port above 65535 and characters outside a DNS-style name are refused,
//! so no two components can read one value as two different hosts.

use std::net::Ipv6Addr;

/// Why a Host or `:authority` value is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostError {
    /// Empty, or longer than a DNS name can be.
    Length,
    /// A character a host name cannot hold (`@` for userinfo among them).
    Character,
    /// `[` without a valid IPv6 address and `]`.
    Ipv6,
    /// Not a decimal port in 0..=65535.
    Port,
}

impl HostError {
    /// The text of the 400 response.
    pub fn message(self) -> &'static str {
        match self {
            Self::Length => "empty or too long host",
            Self::Character => "invalid character in host",
            Self::Ipv6 => "invalid IPv6 literal in host",
            Self::Port => "invalid port in host",
        }
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for HostError {}

/// Longest name (253) plus a trailing dot, brackets or `:port`.
const MAX_HOST_LEN: usize = 261;

/// Checks a Host header or `:authority` value; returns the host without its port.
pub fn validate(value: &[u8]) -> Result<&str, HostError> {
    if value.is_empty() || value.len() > MAX_HOST_LEN {
        return Err(HostError::Length);
    }
    let (host, port) = split_port(value)?;
    if let Some(port) = port {
        check_port(port)?;
    }
    if host.first() == Some(&b'[') {
        check_ipv6_literal(host)?;
    } else if host.is_empty()
        || !host
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(HostError::Character);
    }
    // Only ASCII got this far.
    std::str::from_utf8(host).map_err(|_| HostError::Character)
}

/// `host[:port]` → (host, port); the colon of a port follows `]` for IPv6 literals.
fn split_port(value: &[u8]) -> Result<(&[u8], Option<&[u8]>), HostError> {
    if value.first() == Some(&b'[') {
        let close = value
            .iter()
            .position(|b| *b == b']')
            .ok_or(HostError::Ipv6)?;
        return match &value[close + 1..] {
            [] => Ok((value, None)),
            [b':', port @ ..] => Ok((&value[..=close], Some(port))),
            _ => Err(HostError::Ipv6),
        };
    }
    match value.iter().position(|b| *b == b':') {
        None => Ok((value, None)),
        Some(colon) => Ok((&value[..colon], Some(&value[colon + 1..]))),
    }
}

fn check_port(port: &[u8]) -> Result<(), HostError> {
    if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return Err(HostError::Port);
    }
    let value: u32 = port.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'));
    if value > u32::from(u16::MAX) {
        return Err(HostError::Port);
    }
    Ok(())
}

fn check_ipv6_literal(host: &[u8]) -> Result<(), HostError> {
    let inner = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .ok_or(HostError::Ipv6)?;
    let text = std::str::from_utf8(inner).map_err(|_| HostError::Ipv6)?;
    text.parse::<Ipv6Addr>().map_err(|_| HostError::Ipv6)?;
    Ok(())
}

/// Whether two authorities name the same host and port (host names are case-insensitive).
pub fn same_authority(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_hosts_pass_without_their_port() {
        for (value, host) in [
            ("example.com", "example.com"),
            ("api.example.com.", "api.example.com."),
            ("Example.COM:8443", "Example.COM"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("[::1]", "[::1]"),
            ("[2001:db8::1]:443", "[2001:db8::1]"),
            ("svc_name.internal:0", "svc_name.internal"),
            ("host:65535", "host"),
        ] {
            assert_eq!(validate(value.as_bytes()), Ok(host), "{value}");
        }
    }

    //= https://www.rfc-editor.org/rfc/rfc3986#section-3.2.2
    #[test]
    fn ambiguous_hosts_are_refused() {
        for (value, error) in [
            ("", HostError::Length),
            ("a:b:c", HostError::Port),
            ("::1", HostError::Port),
            ("host:99999", HostError::Port),
            ("host:", HostError::Port),
            ("host:+80", HostError::Port),
            ("user@host", HostError::Character),
            ("user:pw@host", HostError::Port),
            ("[", HostError::Ipv6),
            ("[::1", HostError::Ipv6),
            ("[::1]x", HostError::Ipv6),
            ("[not-ipv6]", HostError::Ipv6),
            ("a b", HostError::Character),
            ("a/b", HostError::Character),
            (":80", HostError::Character),
        ] {
            assert_eq!(validate(value.as_bytes()), Err(error), "{value}");
        }
        assert_eq!(validate(&[b'a'; 300]), Err(HostError::Length));
    }
}
