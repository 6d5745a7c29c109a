//! Who may speak on a local command socket: root, or the user the server runs as. Checked
//! from the kernel's credentials of the peer (SO_PEERCRED) before a byte is read; a peer
//! whose credentials cannot be read is refused.

/// The peer's uid, when it may speak to this process.
pub fn trusted(stream: &tokio::net::UnixStream) -> Option<u32> {
    let me = nix::unistd::geteuid().as_raw();
    let uid = stream.peer_cred().ok()?.uid();
    (uid == 0 || uid == me).then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn our_own_user_is_trusted() {
        let (a, _b) = tokio::net::UnixStream::pair().expect("pair");
        assert_eq!(trusted(&a), Some(nix::unistd::geteuid().as_raw()));
    }
}
