//! Killing and freezing process trees by identity. The tree is stopped first (SIGSTOP, again
//! and again until no new child appears), so nothing it forks during the kill escapes; then
//! every member is killed (SIGKILL) or left stopped (freeze).

use std::path::Path;

use nix::{sys::signal::Signal, unistd::Pid};

use crate::model::process_table::ProcessKey;

/// How many rounds of stopping are tried before giving up on a tree that keeps growing.
const STOP_ROUNDS: usize = 16;

/// (pid, ppid, start) of every process in /proc.
fn snapshot() -> Vec<(u32, u32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, ppid, start) = crate::host::procfs::parse_stat(&stat)?;
            Some((pid, ppid, start))
        })
        .collect()
}

/// The start time of the live process `pid`, if any.
pub fn start_of(pid: u32) -> Option<u64> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    crate::host::procfs::parse_stat(&stat).map(|(_, _, s)| s)
}

/// Whether `key` is still the same live process.
pub fn alive(key: &ProcessKey) -> bool {
    start_of(key.pid) == Some(key.start)
}

fn signal(pid: u32, sig: Signal) -> bool {
    i32::try_from(pid).is_ok_and(|p| nix::sys::signal::kill(Pid::from_raw(p), sig).is_ok())
}

/// The children of `pid`, from /proc/PID/task/*/children; None when this kernel does not
/// provide those files (CONFIG_PROC_CHILDREN).
fn children(pid: u32) -> Option<Vec<u32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    let mut any = false;
    for t in tasks.filter_map(Result::ok) {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            any = true;
            out.extend(
                text.split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    any.then_some(out)
}

/// Stops `root` and every descendant; returns the members, root first. `skip` leaves a
/// process (and what is below it) out, for protected ones.
pub fn stop_tree(root: &ProcessKey, skip: &dyn Fn(u32) -> bool) -> Vec<(u32, u64)> {
    if !alive(root) {
        return Vec::new();
    }
    let mut members: Vec<(u32, u64)> = vec![(root.pid, root.start)];
    signal(root.pid, Signal::SIGSTOP);
    if children(root.pid).is_some() {
        // Walk down through the children files until a pass finds no one new: every
        // member is stopped, so none can fork behind the walk.
        for _ in 0..STOP_ROUNDS {
            let mut added = false;
            let mut i = 0;
            while i < members.len() {
                let (pid, _) = members[i];
                for c in children(pid).unwrap_or_default() {
                    if members.iter().any(|(p, _)| *p == c) || skip(c) {
                        continue;
                    }
                    if let Some(start) = start_of(c) {
                        signal(c, Signal::SIGSTOP);
                        members.push((c, start));
                        added = true;
                    }
                }
                i += 1;
            }
            if !added {
                return members;
            }
        }
        return members;
    }
    for _ in 0..STOP_ROUNDS {
        let all = snapshot();
        let mut grew = false;
        loop {
            let mut added = false;
            for &(pid, ppid, start) in &all {
                if members.iter().any(|(p, _)| *p == pid) || skip(pid) {
                    continue;
                }
                if members.iter().any(|(p, _)| *p == ppid) {
                    signal(pid, Signal::SIGSTOP);
                    members.push((pid, start));
                    added = true;
                }
            }
            if !added {
                break;
            }
            grew = true;
        }
        if !grew {
            break;
        }
    }
    members
}

/// Kills the stopped `members` (identity checked again). Returns the pids killed.
pub fn kill_members(members: &[(u32, u64)]) -> Vec<u32> {
    members
        .iter()
        .filter(|(pid, start)| start_of(*pid) == Some(*start) && signal(*pid, Signal::SIGKILL))
        .map(|(pid, _)| *pid)
        .collect()
}

/// Resumes stopped processes that are still the ones that were stopped.
pub fn resume(members: &[(u32, u64)]) -> Vec<u32> {
    members
        .iter()
        .filter(|(pid, start)| start_of(*pid) == Some(*start) && signal(*pid, Signal::SIGCONT))
        .map(|(pid, _)| *pid)
        .collect()
}
