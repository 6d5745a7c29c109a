//! Locating tracefs, mounting it when the host boots without it.

use std::path::{Path, PathBuf};

/// Where the sensor mounts tracefs when it finds it nowhere.
pub const DEFAULT_MOUNT: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("cannot read the mount table {path}: {source}")]
    Mounts {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("tracefs is not mounted and mounting it at {path} failed: {source}")]
    Mount { path: PathBuf, source: nix::Error },
}

/// The tracefs mount point from a mount table (`/proc/self/mounts` format).
pub fn find_in_mounts(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_src, target, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "tracefs").then(|| PathBuf::from(unescape_mount_path(target)))
    })
}

/// Undoes the octal escapes (`\040` for a space) of a mount-table path.
pub fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Returns the tracefs mount point, mounting it at [`DEFAULT_MOUNT`] when missing.
/// The second value is true when this call mounted it.
pub fn ensure_mounted() -> Result<(PathBuf, bool), TracefsError> {
    const MOUNTS: &str = "/proc/self/mounts";
    let mounts = std::fs::read_to_string(MOUNTS).map_err(|source| TracefsError::Mounts {
        path: MOUNTS,
        source,
    })?;
    if let Some(path) = find_in_mounts(&mounts) {
        return Ok((path, false));
    }
    let target = Path::new(DEFAULT_MOUNT);
    nix::mount::mount(
        Some("tracefs"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|source| TracefsError::Mount {
        path: target.to_owned(),
        source,
    })?;
    tracing::info!(path = DEFAULT_MOUNT, "mounted tracefs");
    Ok((target.to_owned(), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tracefs_and_unescapes() {
        let table = "proc /proc proc rw 0 0\ntracefs /sys/kernel/tr\\040acing tracefs rw 0 0\n";
        assert_eq!(
            find_in_mounts(table),
            Some(PathBuf::from("/sys/kernel/tr acing"))
        );
        assert_eq!(find_in_mounts("proc /proc proc rw 0 0\n"), None);
    }
}
