//! Durability off the event loop.
//!
//! A write reaches the page cache at once, and from there it outlives a crash of the sensor;
//! only a crash of the host can lose it before it is synced. An `fdatasync` on this VM's disk
//! takes from 1 to more than 250 ms, and on the event loop every detection and response behind
//! it waits as long. So the loop writes, and a thread of the file's own syncs: each write is on
//! disk within one sync of it (the writes that land during a sync share the next one).
//!
//! [`SyncedFile`] is an append-only log synced this way; [`sync_later`] syncs a file once
//! (a rewritten configuration file, a copy put aside in the vault), so that what the sensor
//! changed on disk is durable soon, while the change itself takes effect at once.

use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    sync::mpsc,
};

/// An append-only file whose appends are synced by a thread of its own. Dropping it syncs
/// what is left and waits for that.
pub struct SyncedFile {
    file: File,
    dirty: Option<mpsc::SyncSender<()>>,
    syncer: Option<std::thread::JoinHandle<()>>,
}

impl SyncedFile {
    /// Takes over `file` (opened for appending); `path` names it in the syncer's log lines.
    pub fn new(file: File, path: &Path) -> std::io::Result<Self> {
        let for_sync = file.try_clone()?;
        let path = path.to_owned();
        // One pending wake-up is enough: a sync started after a write covers it.
        let (dirty, wakeups) = mpsc::sync_channel::<()>(1);
        let syncer = std::thread::Builder::new()
            .name("vigil-sync".into())
            .spawn(move || {
                while wakeups.recv().is_ok() {
                    sync_or_log(&for_sync, &path);
                }
                // The owner is gone: one last sync for the appends made since the previous.
                sync_or_log(&for_sync, &path);
            })?;
        Ok(Self {
            file,
            dirty: Some(dirty),
            syncer: Some(syncer),
        })
    }

    /// Opens (or creates, mode 0600) the append-only log at `path`. A torn last line (a
    /// power cut or a full disk mid-write) is ended with a newline first, so that it stays
    /// one unreadable line, counted by readers, and the next record starts a line of its own
    /// rather than being glued to the fragment and lost with it.
    pub fn open_log(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        if ends_torn(&file)? {
            file.write_all(b"\n")?;
            file.sync_data()?;
            tracing::warn!(path = %path.display(), "the last line was torn (a crash or a full disk mid-write): ended it, to be skipped and counted");
        }
        Self::new(file, path)
    }

    /// Appends `bytes` in one write and asks for a sync. An error is the write's own, and
    /// then nothing of `bytes` stays in the file (a write cut short by a full disk is cut
    /// off again), so a retry never doubles a part; a sync that fails is logged by the
    /// syncer.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let before = self.file.metadata()?.len();
        if let Err(e) = self.file.write_all(bytes) {
            if let Err(t) = self.file.set_len(before) {
                tracing::error!(error = %t, "cannot cut a failed append off the log");
            }
            return Err(e);
        }
        if let Some(tx) = &self.dirty {
            // Full: a sync is already due, and it will cover this write.
            let _ = tx.try_send(());
        }
        Ok(())
    }
}

/// Whether `file` is not empty and does not end in a newline.
fn ends_torn(file: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt as _;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] != b'\n')
}

impl Drop for SyncedFile {
    fn drop(&mut self) {
        self.dirty = None;
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
    }
}

fn sync_or_log(file: &File, path: &Path) {
    if let Err(e) = file.sync_data() {
        tracing::error!(path = %path.display(), error = %e, "cannot sync to disk");
    }
}

/// When [`write_atomically`] makes its file durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Synced before the rename, on the caller's thread (a thread of its own, or a rare
    /// command: never the event loop).
    Now,
    /// Renamed into place at once, synced by the background flusher.
    Later,
}

/// Replaces `path` with `bytes` all at once: written to a file of its own beside it (mode
/// `mode`), then renamed over it, so a reader sees the old content or the new, never part.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32, flush: Flush) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.vigil-tmp"));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    if flush == Flush::Now {
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)?;
    if flush == Flush::Later {
        sync_later(f, path);
    }
    Ok(())
}

/// What the background flusher does with a file.
enum Job {
    /// Sync it (data and metadata), then the directory holding the path.
    Sync(File, PathBuf),
    /// Close it: the last reference to a replaced or removed inode, whose blocks the kernel
    /// frees at this close (on a filesystem mounted with `discard`, waiting for the device).
    Close(File),
}

/// Syncs `file` (data and metadata) on the background flusher, and then the directory that
/// holds `path`, so that a rename into it is durable too.
pub fn sync_later(file: File, path: &Path) {
    flush(Job::Sync(file, path.to_owned()));
}

/// Closes `file` on the background flusher: hold an open descriptor of a file before
/// replacing or removing it, and hand it here, so that freeing its blocks never waits on the
/// caller's thread.
pub fn close_later(file: File) {
    flush(Job::Close(file));
}

fn flush(job: Job) {
    static FLUSHER: std::sync::OnceLock<Option<mpsc::Sender<Job>>> = std::sync::OnceLock::new();
    let flusher = FLUSHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("vigil-flush".into())
            .spawn(move || {
                for job in rx {
                    run(job);
                }
            })
            .ok()
            .map(|_| tx)
    });
    let queued = match flusher {
        Some(tx) => tx.send(job).map_err(|e| e.0),
        None => Err(job),
    };
    // No flusher thread: do it here rather than not at all.
    if let Err(job) = queued {
        run(job);
    }
}

fn run(job: Job) {
    match job {
        Job::Sync(file, path) => {
            if let Err(e) = file.sync_all() {
                tracing::error!(path = %path.display(), error = %e, "cannot sync to disk");
            }
            if let Some(dir) = path.parent()
                && let Ok(d) = File::open(dir)
            {
                let _ = d.sync_all();
            }
        }
        Job::Close(file) => drop(file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_ended_before_the_next_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n{\"b\":").expect("write a torn log");
        let mut log = SyncedFile::open_log(&path).expect("open");
        log.append(b"{\"c\":3}\n").expect("append");
        drop(log);
        let read = crate::host::jsonl::read::<serde_json::Value>(&path).expect("read");
        assert_eq!(read.records.len(), 2, "the record after the tear is kept");
        assert_eq!(read.records[1]["c"], 3);
        assert_eq!(read.unreadable, 1, "the fragment is one counted line");
        assert!(!read.torn);
        // A whole file is left as it is.
        let before = std::fs::read(&path).expect("read");
        drop(SyncedFile::open_log(&path).expect("reopen"));
        assert_eq!(std::fs::read(&path).expect("read"), before);
    }

    #[test]
    fn appends_are_in_the_file_at_once_and_after_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        let mut log = SyncedFile::new(file, &path).expect("syncer");
        for i in 0..100 {
            log.append(format!("{i}\n").as_bytes()).expect("append");
        }
        // Readable before any sync: the page cache is what a reader sees.
        assert_eq!(
            std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .count(),
            100
        );
        drop(log);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().last(), Some("99"));
    }

    #[test]
    fn sync_later_keeps_the_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("conf");
        let mut f = File::create(&path).expect("create");
        f.write_all(b"kept\n").expect("write");
        sync_later(f, &path);
        assert_eq!(std::fs::read(&path).expect("read"), b"kept\n");
    }
}
