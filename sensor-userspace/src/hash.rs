//! SHA-256 of files, for quarantine records and the hash blocklist.

use std::{io::Read, path::Path};

use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256 of a file's content.
pub fn sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
