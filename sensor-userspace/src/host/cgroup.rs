//! cgroup v2: where it is mounted (found in /proc/self/mounts, never assumed: on a hybrid
//! layout it is /sys/fs/cgroup/unified), and the groups the response makes to hold a process
//! tree (to freeze it, or to block a destination for it alone).

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// The mount point of the cgroup v2 hierarchy, from a mounts table (`/proc/self/mounts`).
pub fn find_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape(dir)))
    })
}

/// The cgroup v2 mount of this host.
pub fn mount() -> Option<PathBuf> {
    find_mount(&std::fs::read_to_string("/proc/self/mounts").ok()?)
}

/// Undoes the octal escapes (`\040` for a space) of /proc/self/mounts.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 id of a directory: its inode number.
pub fn id(dir: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata(dir)?.ino())
}

/// The cgroup v2 path of a process, relative to the mount (`0::/path` in /proc/PID/cgroup).
pub fn of_pid(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// A cgroup the response made to hold a process tree. Children the tree forks later are born
/// in it.
#[derive(Debug)]
pub struct TreeGroup {
    pub path: PathBuf,
}

/// How long a freeze may take to settle.
const FREEZE_WAIT: Duration = Duration::from_secs(2);

impl TreeGroup {
    /// Creates `name` under `parent`.
    pub fn create(parent: &Path, name: &str) -> io::Result<Self> {
        let path = parent.join(name);
        std::fs::create_dir(&path)?;
        Ok(Self { path })
    }

    pub fn open(path: PathBuf) -> Self {
        Self { path }
    }

    /// The group `pid` is already in, when it is one of `ours` (the groups the response's
    /// own records hold, never a group recognised by its name): a second containment of the
    /// same tree joins it rather than pulling the tree out (out of a frozen group would thaw
    /// it).
    pub fn holding(pid: u32, mount: &Path, ours: &[&Path]) -> Option<Self> {
        let path = mount.join(of_pid(pid)?.trim_start_matches('/'));
        ours.contains(&path.as_path()).then_some(Self { path })
    }

    /// Moves each process (with all its threads) in; returns the pids that moved, each with
    /// the cgroup it came from. A process that exited meanwhile is skipped.
    pub fn adopt(&self, pids: &[u32]) -> Vec<(u32, String)> {
        let procs = self.path.join("cgroup.procs");
        pids.iter()
            .filter_map(|&pid| {
                let from = of_pid(pid)?;
                std::fs::write(&procs, pid.to_string()).ok()?;
                Some((pid, from))
            })
            .collect()
    }

    /// Freezes the group and waits until the kernel says it is frozen.
    pub fn freeze(&self) -> io::Result<()> {
        std::fs::write(self.path.join("cgroup.freeze"), "1")?;
        let deadline = Instant::now() + FREEZE_WAIT;
        loop {
            let events = std::fs::read_to_string(self.path.join("cgroup.events"))?;
            if events.lines().any(|l| l == "frozen 1") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other("the group did not report frozen in time"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn thaw(&self) -> io::Result<()> {
        std::fs::write(self.path.join("cgroup.freeze"), "0")
    }

    /// Thaws the group, moves every process still in it back where it came from (to the
    /// group's parent when unknown), and removes the group. `origins` is what [`adopt`]
    /// returned; `mount` the cgroup v2 mount the origins are relative to.
    pub fn dissolve(&self, mount: &Path, origins: &[(u32, String)]) -> io::Result<()> {
        if self.path.join("cgroup.freeze").exists() {
            self.thaw()?;
        }
        let parent = self.path.parent().unwrap_or(mount).to_owned();
        let members = std::fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
        for pid in members.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            let home = origins
                .iter()
                .find(|(p, _)| *p == pid)
                .map(|(_, from)| mount.join(from.trim_start_matches('/')))
                .filter(|dir| dir.is_dir())
                .unwrap_or_else(|| parent.clone());
            if std::fs::write(home.join("cgroup.procs"), pid.to_string()).is_err() {
                // Its old group may refuse it (a domain with controllers): the parent takes it.
                let _ = std::fs::write(parent.join("cgroup.procs"), pid.to_string());
            }
        }
        // Removal fails while the last member is still leaving: retry briefly.
        let deadline = Instant::now() + FREEZE_WAIT;
        loop {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_mount_of_a_hybrid_layout() {
        let mounts = "sysfs /sys sysfs rw 0 0\n\
            tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
            cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid 0 0\n\
            cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n";
        assert_eq!(
            find_mount(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(find_mount("tmpfs /sys/fs/cgroup tmpfs ro 0 0\n"), None);
        assert_eq!(
            find_mount("none /my\\040cg cgroup2 rw 0 0\n"),
            Some(PathBuf::from("/my cg"))
        );
    }

    #[test]
    fn this_host_has_cgroup2() {
        let m = mount().expect("cgroup2 is mounted on the machines we run on");
        assert!(m.join("cgroup.procs").exists(), "{}", m.display());
        assert!(of_pid(std::process::id()).is_some());
    }
}
