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
    Ok(sensor_common::protocol::hex(&h.finalize()))
}

/// Files larger than this are not hashed by a sweep (payloads are small; disk images are
/// not what a sweep looks for).
pub const SWEEP_MAX_BYTES: u64 = 256 << 20;

/// Which of `paths` (regular files up to [`SWEEP_MAX_BYTES`]) have the SHA-256 `want`, and
/// how many were hashed. Files that cannot be read are skipped.
/// With `size`, only files of that size are hashed (a file of another size cannot match).
pub fn sweep(paths: &[String], want: &str, size: Option<u64>) -> (Vec<String>, u64) {
    let mut found = Vec::new();
    let mut hashed = 0;
    for p in paths {
        let path = Path::new(p);
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        if !meta.is_file() || meta.len() > SWEEP_MAX_BYTES || size.is_some_and(|s| s != meta.len())
        {
            continue;
        }
        if let Ok(h) = sha256(path) {
            hashed += 1;
            if h == want {
                found.push(p.clone());
            }
        }
    }
    (found, hashed)
}
