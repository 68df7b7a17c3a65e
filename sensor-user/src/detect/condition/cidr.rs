//! Address blocks for the `in_cidr` operator: `net.peer.address in_cidr (10.0.0.0/8, fd00::/8,
//! 192.168.1.7)`. A bare address is a block of one. An IPv4 address written as IPv6
//! (`::ffff:10.1.2.3`, what a dual-stack socket reports) is matched as the IPv4 address.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// One block (`ipnet`'s network type), checked to be written as its network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cidr(IpNet);

impl Cidr {
    /// Parses `10.0.0.0/8`, `fd00::/8` or a single address; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!(
                "{text:?} is not an IP address or CIDR block (10.0.0.0/8, fd00::/8, 192.168.1.7)"
            )
        })?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let net = match prefix {
            None => IpNet::from(addr),
            Some(p) => p
                .parse::<u8>()
                .ok()
                .and_then(|p| IpNet::new(addr, p).ok())
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {bits}"))?,
        };
        if net.trunc() != net {
            return Err(format!(
                "{text:?} has bits set past its /{prefix} prefix; write the network ({network})",
                prefix = net.prefix_len(),
                network = net.trunc()
            ));
        }
        Ok(Cidr(net))
    }

    /// Whether `addr` is in the block.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses_only() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.255.1.2")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped IPv6");
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("fd00::1")));
        let one = Cidr::parse("192.168.1.7").unwrap();
        assert!(one.contains(ip("192.168.1.7")) && !one.contains(ip("192.168.1.8")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert_eq!(Cidr::parse("::/0").unwrap().to_string(), "::/0");
    }

    #[test]
    fn bad_blocks_say_what_is_wrong() {
        for (text, says) in [
            ("10.0.0/8", "not an IP address"),
            ("host.local", "not an IP address"),
            ("10.0.0.0/33", "0 to 32"),
            ("fd00::/x", "0 to 128"),
            ("10.1.0.0/8", "write the network (10.0.0.0/8)"),
        ] {
            let err = Cidr::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
