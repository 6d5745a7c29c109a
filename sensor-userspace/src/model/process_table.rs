//! The live table of processes: identity, lineage, image and credentials.
//!
//! A process is named by [`ProcessKey`] (pid + start time), so a reused pid never merges two
//! processes. Exited processes stay for a retention window (their children still need their
//! lineage), bounded by a cap, then age out.

use std::collections::VecDeque;

use ahash::{HashMap, HashMapExt, HashSet, HashSetExt};

use sensor_common::decode::{ExitStatus, Task};
use serde::{Deserialize, Serialize};

use crate::host::procfs::ProcSnapshot;

/// The identity of a process: its pid and its start time in clock ticks since boot (the unit
/// of `/proc/PID/stat`, so processes seen by the kernel and by /proc compare equal). The same
/// type crosses the wire to the controller.
pub use sensor_common::wire::ProcessId as ProcessKey;

/// Where the table learnt of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Running before the sensor started; read from /proc.
    Procfs,
    /// Seen by the kernel programs.
    Kernel,
}

/// How and when a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exited {
    pub boot_ns: u64,
    pub status: ExitStatus,
}

/// One process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub key: ProcessKey,
    pub ppid: u32,
    /// The parent's identity, when the parent is known.
    pub parent: Option<ProcessKey>,
    pub comm: String,
    pub exe: Option<String>,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    /// cgroup v2 id (0 when unknown, as for processes read from /proc).
    pub cgroup_id: u64,
    pub origin: Origin,
    /// Number of execs seen since the sensor started.
    pub execs: u32,
    pub exit: Option<Exited>,
}

/// Sizes and counters of the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStats {
    pub live: usize,
    pub exited: usize,
    pub seeded: usize,
    /// Exited processes removed after their retention window or by the cap.
    pub aged_out: u64,
}

/// Limits of the table.
#[derive(Clone, Copy, Debug)]
pub struct TableLimits {
    /// How long an exited process is kept.
    pub retention_ns: u64,
    /// Most exited processes kept; the oldest go first.
    pub max_exited: usize,
}

impl Default for TableLimits {
    fn default() -> Self {
        Self {
            retention_ns: 300 * 1_000_000_000,
            max_exited: 65_536,
        }
    }
}

pub struct ProcessTable {
    procs: HashMap<ProcessKey, Process>,
    /// The live process currently holding each pid.
    live: HashMap<u32, ProcessKey>,
    /// Exited processes in exit order, for ageing out.
    exited: VecDeque<(u64, ProcessKey)>,
    ns_per_tick: u64,
    limits: TableLimits,
    seeded: usize,
    aged_out: u64,
    pinned: HashSet<ProcessKey>,
}

impl ProcessTable {
    pub fn new(ticks_per_second: u64, limits: TableLimits) -> Self {
        Self {
            procs: HashMap::new(),
            live: HashMap::new(),
            exited: VecDeque::new(),
            ns_per_tick: 1_000_000_000 / ticks_per_second.max(1),
            limits,
            seeded: 0,
            aged_out: 0,
            pinned: HashSet::new(),
        }
    }

    /// The key of a process that started at `start_boot_ns`.
    pub fn key(&self, pid: u32, start_boot_ns: u64) -> ProcessKey {
        ProcessKey {
            pid,
            start: start_boot_ns / self.ns_per_tick,
        }
    }

    /// Adds processes read from /proc. Parents are linked once all are in.
    pub fn seed(&mut self, snapshots: impl IntoIterator<Item = ProcSnapshot>) {
        let snaps: Vec<ProcSnapshot> = snapshots.into_iter().collect();
        for s in &snaps {
            let key = ProcessKey {
                pid: s.pid,
                start: s.start_ticks,
            };
            if self.procs.contains_key(&key) {
                continue; // the kernel already told us more
            }
            self.procs.insert(
                key,
                Process {
                    key,
                    ppid: s.ppid,
                    parent: None,
                    comm: s.comm.clone(),
                    exe: s.exe.clone(),
                    argv: s.argv.clone(),
                    argv_truncated: false,
                    uid: s.uid,
                    gid: s.gid,
                    euid: s.euid,
                    egid: s.egid,
                    cgroup_id: 0,
                    origin: Origin::Procfs,
                    execs: 0,
                    exit: None,
                },
            );
            self.live.entry(s.pid).or_insert(key);
            self.seeded += 1;
        }
        for s in &snaps {
            let key = ProcessKey {
                pid: s.pid,
                start: s.start_ticks,
            };
            let parent = self.live.get(&s.ppid).copied();
            if let Some(p) = self.procs.get_mut(&key)
                && p.parent.is_none()
            {
                p.parent = parent.filter(|pk| pk.start <= key.start);
            }
        }
    }

    fn entry_for(&mut self, task: &Task) -> &mut Process {
        let key = self.key(task.tgid, task.start_boot_ns);
        // Syscall records leave the parent out (ppid 0): it comes from the fork or exec.
        let parent = (task.ppid != 0).then(|| self.key(task.ppid, task.parent_start_boot_ns));
        if let Some(old) = self.live.insert(task.tgid, key)
            && old != key
        {
            // The pid was reused: the old holder is gone even if its exit was missed.
            tracing::debug!(pid = task.tgid, "pid reused by a new process");
        }
        let p = self.procs.entry(key).or_insert_with(|| Process {
            key,
            ppid: task.ppid,
            parent,
            comm: task.comm.clone(),
            exe: None,
            argv: Vec::new(),
            argv_truncated: false,
            uid: task.uid,
            gid: task.gid,
            euid: task.euid,
            egid: task.egid,
            cgroup_id: task.cgroup_id,
            origin: Origin::Kernel,
            execs: 0,
            exit: None,
        });
        if p.parent.is_none() && parent.is_some() {
            // First seen in a record without its parent; this one has it.
            p.parent = parent;
            p.ppid = task.ppid;
        }
        p
    }

    fn refresh(p: &mut Process, task: &Task) {
        p.comm.clone_from(&task.comm);
        p.uid = task.uid;
        p.gid = task.gid;
        p.euid = task.euid;
        p.egid = task.egid;
        p.cgroup_id = task.cgroup_id;
    }

    /// A new process: it inherits its parent's image until it execs.
    pub fn on_fork(&mut self, task: &Task) -> ProcessKey {
        let parent_key = self.key(task.ppid, task.parent_start_boot_ns);
        let inherited = self
            .procs
            .get(&parent_key)
            .map(|p| (p.exe.clone(), p.argv.clone(), p.argv_truncated));
        let p = self.entry_for(task);
        Self::refresh(p, task);
        if let Some((exe, argv, truncated)) = inherited
            && p.execs == 0
        {
            p.exe = exe;
            p.argv = argv;
            p.argv_truncated = truncated;
        }
        p.key
    }

    /// A new image in an existing process.
    pub fn on_exec(
        &mut self,
        task: &Task,
        filename: &str,
        argv: Option<(Vec<String>, bool)>,
    ) -> ProcessKey {
        let p = self.entry_for(task);
        Self::refresh(p, task);
        p.exe = Some(filename.to_owned());
        match argv {
            Some((argv, truncated)) => {
                p.argv = argv;
                p.argv_truncated = truncated;
            }
            None => {
                p.argv.clear();
                p.argv_truncated = true;
            }
        }
        p.execs += 1;
        p.key
    }

    /// Any other event of a process: refreshes its credentials and comm.
    pub fn touch(&mut self, task: &Task) -> ProcessKey {
        let p = self.entry_for(task);
        Self::refresh(p, task);
        p.key
    }

    /// The end of a process.
    pub fn on_exit(&mut self, task: &Task, boot_ns: u64, status: ExitStatus) -> ProcessKey {
        let p = self.entry_for(task);
        Self::refresh(p, task);
        let key = p.key;
        if p.exit.is_none() {
            p.exit = Some(Exited { boot_ns, status });
            self.exited.push_back((boot_ns, key));
        }
        if self.live.get(&key.pid) == Some(&key) {
            self.live.remove(&key.pid);
        }
        key
    }

    /// Removes exited processes past the retention window, and the oldest beyond the cap;
    /// returns them. A pinned process (one an open incident refers to) is kept.
    pub fn age_out(&mut self, now_boot_ns: u64) -> Vec<ProcessKey> {
        let mut removed = Vec::new();
        let mut kept = Vec::new();
        while let Some(&(at, key)) = self.exited.front() {
            let expired = now_boot_ns.saturating_sub(at) > self.limits.retention_ns;
            if !expired && self.exited.len() + kept.len() <= self.limits.max_exited {
                break;
            }
            self.exited.pop_front();
            if self.pinned.contains(&key) {
                kept.push((at, key));
                continue;
            }
            self.procs.remove(&key);
            self.aged_out += 1;
            removed.push(key);
        }
        for entry in kept.into_iter().rev() {
            self.exited.push_front(entry);
        }
        removed
    }

    /// Keeps a process (and so its lineage) past its retention window until unpinned.
    pub fn pin(&mut self, key: ProcessKey) {
        self.pinned.insert(key);
    }

    pub fn unpin(&mut self, key: &ProcessKey) {
        self.pinned.remove(key);
    }

    pub fn get(&self, key: &ProcessKey) -> Option<&Process> {
        self.procs.get(key)
    }

    /// The live process holding `pid`.
    pub fn live(&self, pid: u32) -> Option<&Process> {
        self.live.get(&pid).and_then(|k| self.procs.get(k))
    }

    /// Parent, grandparent, ... up to `max` known ancestors, nearest first.
    pub fn ancestors(&self, key: &ProcessKey, max: usize) -> Vec<&Process> {
        let mut out = Vec::new();
        let mut cur = self.procs.get(key).and_then(|p| p.parent);
        while let Some(k) = cur {
            if out.len() >= max {
                break;
            }
            let Some(p) = self.procs.get(&k) else { break };
            if out.iter().any(|seen: &&Process| seen.key == p.key) {
                break; // never loop, whatever the data says
            }
            out.push(p);
            cur = p.parent;
        }
        out
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            live: self.live.len(),
            exited: self.exited.len(),
            seeded: self.seeded,
            aged_out: self.aged_out,
        }
    }

    /// Every process in the table.
    pub fn iter(&self) -> impl Iterator<Item = &Process> {
        self.procs.values()
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use sensor_common::decode::testing::task;

    use super::*;

    #[test]
    fn pid_reuse_never_merges_processes() {
        let mut t = ProcessTable::new(100, TableLimits::default());
        let first = t.on_fork(&task(500, 10, 1, 0, "a"));
        t.on_exit(
            &task(500, 10, 1, 0, "a"),
            11,
            ExitStatus::Exited { code: 0 },
        );
        let second = t.on_fork(&task(500, 20, 1, 0, "b"));
        assert_ne!(first, second);
        assert_eq!(t.get(&first).map(|p| p.comm.as_str()), Some("a"));
        assert_eq!(t.live(500).map(|p| p.key), Some(second));
    }

    #[test]
    fn lineage_and_inherited_image() {
        let mut t = ProcessTable::new(100, TableLimits::default());
        let sh = t.on_fork(&task(10, 1, 1, 0, "sh"));
        t.on_exec(
            &task(10, 1, 1, 0, "sh"),
            "/bin/sh",
            Some((vec!["sh".into()], false)),
        );
        let child = t.on_fork(&task(11, 2, 10, 1, "sh"));
        assert_eq!(
            t.get(&child).and_then(|p| p.exe.as_deref()),
            Some("/bin/sh")
        );
        let anc: Vec<_> = t.ancestors(&child, 8).iter().map(|p| p.key).collect();
        assert_eq!(anc, vec![sh]);
    }

    #[test]
    fn exited_processes_age_out_within_the_cap() {
        let limits = TableLimits {
            retention_ns: 1_000,
            max_exited: 10,
        };
        let mut t = ProcessTable::new(100, limits);
        for pid in 1000..1100 {
            let tk = task(pid, pid as u64, 1, 0, "x");
            t.on_fork(&tk);
            t.on_exit(&tk, pid as u64, ExitStatus::Exited { code: 0 });
            t.age_out(0);
        }
        assert!(t.len() <= 10, "{} kept", t.len());
        t.age_out(u64::MAX);
        assert_eq!(t.len(), 0);
        assert_eq!(t.stats().aged_out, 100);
    }

    #[test]
    fn seeding_links_parents() {
        let mut t = ProcessTable::new(100, TableLimits::default());
        let snap = |pid, ppid, start| ProcSnapshot {
            pid,
            ppid,
            start_ticks: start,
            comm: format!("p{pid}"),
            exe: None,
            argv: vec![],
            uid: 0,
            gid: 0,
            euid: 0,
            egid: 0,
        };
        t.seed([snap(1, 0, 1), snap(50, 1, 5), snap(60, 50, 9)]);
        let anc: Vec<u32> = t
            .ancestors(&ProcessKey { pid: 60, start: 9 }, 8)
            .iter()
            .map(|p| p.key.pid)
            .collect();
        assert_eq!(anc, vec![50, 1]);
    }
}
