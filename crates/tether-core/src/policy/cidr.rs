//! Address ranges for the `source_ip` criterion: `10.0.0.0/8`, `2001:db8::/32`, or a
//! bare address (a /32 or /128), parsed as Pomerium's `net.ParseCIDR` reads them
//! (host bits may be set: `192.168.1.1/24` is `192.168.1.0/24`). IPv4-mapped IPv6
//! addresses (`::ffff:10.0.0.1`, what a dual-stack listener reports for an IPv4
//! client) match IPv4 ranges.

use std::fmt;
use std::net::IpAddr;

/// One address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits cleared).
    addr: IpAddr,
    /// Prefix length: at most 32 for IPv4, 128 for IPv6.
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX` or a bare `ADDR`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let bad = || format!("expected an IP address or CIDR range, found {text:?}");
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => {
                let addr: IpAddr = a.parse().map_err(|_| bad())?;
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let prefix: u8 = p.parse().map_err(|_| bad())?;
                (addr, prefix)
            }
            None => {
                let addr: IpAddr = text.parse().map_err(|_| bad())?;
                (addr, max_prefix(addr))
            }
        };
        if prefix > max_prefix(addr) {
            return Err(format!(
                "{text:?}: prefix /{prefix} is longer than the address ({} bits)",
                max_prefix(addr)
            ));
        }
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` lies in the range. An IPv4-mapped IPv6 address counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `addr` with everything past the first `prefix` bits cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}
