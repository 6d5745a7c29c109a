//! The quarantine vault, `STATE/vault/` (mode 0700): a quarantined file is moved in under its
//! action id, made unreadable (mode 0), and kept with its hash, owner, mode and times so the
//! undo gives back the identical file.

use std::{
    fs::{self, File},
    io::Write,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use super::journal::FileMeta;

pub use crate::host::hash::sha256;

/// What a file is now: hash, size, owner, mode and times. Regular files only.
pub fn meta(path: &Path) -> std::io::Result<FileMeta> {
    let m = fs::symlink_metadata(path)?;
    if !m.file_type().is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(FileMeta {
        sha256: sha256(path)?,
        size: m.len(),
        uid: m.uid(),
        gid: m.gid(),
        mode: m.mode() & 0o7777,
        atime_ns: m.atime() * 1_000_000_000 + m.atime_nsec(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
    })
}

/// Moves `from` to `to`: a rename on one filesystem, else copy, sync and unlink.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match fs::rename(from, to) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
        Err(e) => return Err(e),
    }
    let mut src = File::open(from)?;
    let mut dst = fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(to)?;
    std::io::copy(&mut src, &mut dst)?;
    dst.flush()?;
    // The copy is whole in the page cache; it reaches the disk on the flusher, not while the
    // file it was taken from can still be run.
    crate::host::durable::sync_later(dst, to);
    fs::remove_file(from)?;
    // `src` holds the last reference: its blocks are freed on the flusher.
    crate::host::durable::close_later(src);
    Ok(())
}

/// Sets owner, mode and times as `meta` says.
pub fn apply_meta(path: &Path, meta: &FileMeta) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(meta.uid), Some(meta.gid))?;
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))?;
    let at = |ns: i64| {
        let d = std::time::Duration::new(
            u64::try_from(ns.div_euclid(1_000_000_000)).unwrap_or(0),
            u32::try_from(ns.rem_euclid(1_000_000_000)).unwrap_or(0),
        );
        std::time::UNIX_EPOCH + d
    };
    File::open(path)?.set_times(
        fs::FileTimes::new()
            .set_accessed(at(meta.atime_ns))
            .set_modified(at(meta.mtime_ns)),
    )
}

pub struct Vault {
    dir: PathBuf,
}

impl Vault {
    pub fn open(state: &Path) -> std::io::Result<Self> {
        let dir = state.join("vault");
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        Ok(Self { dir })
    }

    /// Moves `path` into the vault as `id`; returns where it went and what it was.
    pub fn put(&self, path: &Path, id: &str) -> std::io::Result<(PathBuf, FileMeta)> {
        let meta = meta(path)?;
        let to = self.dir.join(id);
        move_file(path, &to)?;
        fs::set_permissions(&to, fs::Permissions::from_mode(0o000))?;
        Ok((to, meta))
    }

    /// Gives a file back: never over an existing file, and only with the hash it had (for
    /// a file moved aside while its writer still wrote it, `growing`, the hash of the vault
    /// copy as it is).
    pub fn restore(
        vault: &Path,
        path: &Path,
        meta: &FileMeta,
        growing: bool,
    ) -> std::io::Result<()> {
        if fs::symlink_metadata(path).is_ok() {
            return Err(std::io::Error::other(format!(
                "a file exists at {} now; not overwriting it",
                path.display()
            )));
        }
        fs::set_permissions(vault, fs::Permissions::from_mode(0o600))?;
        let got = sha256(vault)?;
        if !growing && got != meta.sha256 {
            return Err(std::io::Error::other(format!(
                "the vault copy {} changed (sha256 {got}, expected {})",
                vault.display(),
                meta.sha256
            )));
        }
        move_file(vault, path)?;
        apply_meta(path, meta)
    }
}
