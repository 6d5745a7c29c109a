//! Where a plain-HTTP side server (`--metrics`) listens: `PORT` alone is loopback
//! (`127.0.0.1:PORT`), so nothing is exposed to the network unless an address is named.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
#[error("the address {0:?} is neither a port nor an address with a port")]
pub struct ListenAddrError(pub String);

/// `PORT` as `127.0.0.1:PORT`, `IP:PORT` as given.
pub fn loopback_unless_named(text: &str) -> Result<SocketAddr, ListenAddrError> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| ListenAddrError(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_is_loopback_and_an_address_is_kept() {
        assert_eq!(
            loopback_unless_named("9101").ok(),
            Some(SocketAddr::from(([127, 0, 0, 1], 9101)))
        );
        assert_eq!(
            loopback_unless_named("0.0.0.0:9101").ok(),
            Some(SocketAddr::from(([0, 0, 0, 0], 9101)))
        );
        assert!(loopback_unless_named("localhost").is_err());
        assert!(loopback_unless_named("70000").is_err());
    }
}
