//! In-kernel network containment: host isolation and destination blocks, enforced by cgroup
//! `connect4`/`connect6` programs (a refused connect fails with EPERM) and `cgroup_skb`
//! programs (packets of established connections are dropped both ways).
//!
//! Addresses are IPv6, IPv4 as v4-mapped (`::ffff:a.b.c.d`), in network byte order word by
//! word, exactly as the kernel hands them to the programs. Ports are in host order; port 0
//! means every port. Loopback is never isolated nor blocked.

/// Entries of the destination blocklist.
pub const DEST_BLOCK_ENTRIES: u32 = 4096;

/// Addresses (with an optional port) that stay reachable while the host is isolated: the
/// controller, and whatever the policy adds.
pub const ISOLATION_ALLOW: usize = 8;

/// One blocked destination, host-wide (`scope` 0) or for the processes of one cgroup (its id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DestKey {
    pub scope: u64,
    pub addr: [u32; 4],
    pub port: u16,
    pub _pad: [u16; 3],
}

/// An address (and port, 0 for any) that isolation lets through.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Allowed {
    pub addr: [u32; 4],
    pub port: u16,
    pub _pad: [u16; 3],
}

/// The single entry of the `NET_GUARD` array. The programs pass everything at once while
/// both counts are zero, so an idle guard costs one array lookup per connect or packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NetGuard {
    /// Non-zero while the host is isolated.
    pub isolated: u32,
    /// Entries in use in `allow`.
    pub allowed: u32,
    /// Entries in the destination blocklist (a hint: zero skips its lookups).
    pub blocks: u32,
    pub _pad: u32,
    pub allow: [Allowed; ISOLATION_ALLOW],
}

/// Slots of the per-CPU `NET_STATS` counters.
pub mod net_slot {
    /// Connects refused (isolation or a destination block).
    pub const CONNECT_REFUSED: u32 = 0;
    /// Packets dropped (isolation or a destination block).
    pub const PACKET_DROPPED: u32 = 1;
    pub const COUNT: u32 = 2;
}

/// The v4-mapped form of an IPv4 address given in network byte order.
#[inline(always)]
pub const fn v4_mapped(addr_be: u32) -> [u32; 4] {
    [0, 0, u32::to_be(0xffff), addr_be]
}

/// Whether `addr` (v6, or v4-mapped) is a loopback address: `::1` or 127.0.0.0/8.
#[inline(always)]
pub const fn is_loopback(addr: &[u32; 4]) -> bool {
    if addr[0] == 0 && addr[1] == 0 && addr[2] == 0 && addr[3] == u32::to_be(1) {
        return true;
    }
    addr[0] == 0
        && addr[1] == 0
        && addr[2] == u32::to_be(0xffff)
        && (u32::from_be(addr[3]) >> 24) == 127
}

#[cfg(feature = "wire")]
mod user {
    use std::net::{IpAddr, Ipv6Addr};

    use serde::{Deserialize, Serialize};

    use super::{Allowed, DestKey, is_loopback, v4_mapped};

    /// The kernel's form of an address.
    pub fn words(ip: IpAddr) -> [u32; 4] {
        match ip {
            IpAddr::V4(v4) => v4_mapped(u32::from_ne_bytes(v4.octets())),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                [w(0), w(4), w(8), w(12)]
            }
        }
    }

    /// The address a kernel form stands for (v4-mapped back to IPv4).
    pub fn address(words: [u32; 4]) -> IpAddr {
        let mut o = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        let v6 = Ipv6Addr::from(o);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    }

    /// A destination as people and policies write it: an address, and a port (None: every
    /// port).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub struct Endpoint {
        pub addr: IpAddr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub port: Option<u16>,
    }

    impl core::fmt::Display for Endpoint {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match (self.addr, self.port) {
                (IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}"),
                (a, Some(p)) => write!(f, "{a}:{p}"),
                (a, None) => write!(f, "{a}"),
            }
        }
    }

    impl core::str::FromStr for Endpoint {
        type Err = std::string::String;

        /// `ADDR`, `ADDR:PORT`, or `[V6ADDR]:PORT`.
        fn from_str(s: &str) -> Result<Self, Self::Err> {
            use std::format;
            if let Ok(addr) = s.parse::<IpAddr>() {
                return Ok(Self { addr, port: None });
            }
            match s.parse::<std::net::SocketAddr>() {
                Ok(sa) if sa.port() != 0 => Ok(Self {
                    addr: sa.ip(),
                    port: Some(sa.port()),
                }),
                Ok(_) => Err(format!(
                    "{s:?}: port 0 is not a port; leave it out for every port"
                )),
                Err(_) => Err(format!(
                    "{s:?} is not an address, ADDR:PORT or [V6ADDR]:PORT"
                )),
            }
        }
    }

    impl From<std::net::SocketAddr> for Endpoint {
        fn from(sa: std::net::SocketAddr) -> Self {
            Self {
                addr: sa.ip().to_canonical(),
                port: (sa.port() != 0).then_some(sa.port()),
            }
        }
    }

    impl Endpoint {
        pub fn is_loopback(&self) -> bool {
            is_loopback(&words(self.addr))
        }
    }

    impl DestKey {
        pub fn new(ip: IpAddr, port: u16, scope: u64) -> Self {
            Self {
                scope,
                addr: words(ip),
                port,
                _pad: [0; 3],
            }
        }
    }

    impl Allowed {
        pub fn new(ip: IpAddr, port: u16) -> Self {
            Self {
                addr: words(ip),
                port,
                _pad: [0; 3],
            }
        }
    }
}

// SAFETY: plain integers, padding explicit.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DestKey {}
// SAFETY: plain integers, padding explicit.
#[cfg(feature = "user")]
unsafe impl aya::Pod for NetGuard {}

#[cfg(feature = "wire")]
pub use user::{Endpoint, address, words};

#[cfg(all(test, feature = "user"))]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn loopback_in_both_families() {
        for (ip, lo) in [
            ("127.0.0.1", true),
            ("127.9.8.7", true),
            ("::1", true),
            ("10.0.0.1", false),
            ("128.0.0.1", false),
            ("::2", false),
            ("fe80::1", false),
        ] {
            let ip: IpAddr = ip.parse().expect("address");
            assert_eq!(is_loopback(&words(ip)), lo, "{ip}");
        }
    }

    #[test]
    fn kernel_form_round_trips() {
        for ip in ["10.1.2.3", "2001:db8::7", "::ffff:0:1"] {
            let ip: IpAddr = ip.parse().expect("address");
            assert_eq!(address(words(ip)), ip.to_canonical());
        }
    }
}
