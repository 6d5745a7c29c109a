//! The action journal: `STATE/actions.jsonl`, append-only. Each record is written before the
//! action it describes is reported done, and synced to disk off the event loop within one
//! sync (see [`crate::host::durable`]). Undos, approvals and denials are records too, which
//! settle an earlier one; the state of every action is the fold of the journal, so a restart
//! rebuilds it (and re-arms what is still in force) from the file alone.

use std::path::{Path, PathBuf};

use sensor_common::decode::FileId;
use serde::{Deserialize, Serialize};

use super::netguard::Endpoint;
use crate::policy::Action;

/// What an action was aimed at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Target {
    /// A process and its descendants, by identity.
    ProcessTree {
        pid: u32,
        start: u64,
        exe: Option<String>,
    },
    /// A file by path, and by inode when known.
    File {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<FileId>,
    },
    /// The whole host (isolation).
    Host { name: String },
    /// A network destination, host-wide or for one process tree.
    Destination {
        #[serde(flatten)]
        dest: Endpoint,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tree: Option<(u32, u64)>,
    },
    /// Every file with this content (a fleet block of a payload seen on another host).
    Hash { sha256: String },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ProcessTree { pid, exe, .. } => {
                write!(
                    f,
                    "process tree of pid {pid} ({})",
                    exe.as_deref().unwrap_or("?")
                )
            }
            Self::File { path, .. } => write!(f, "{path}"),
            Self::Host { name } => write!(f, "host {name}"),
            Self::Destination { dest, tree: None } => write!(f, "{dest} (host-wide)"),
            Self::Destination {
                dest,
                tree: Some((pid, _)),
            } => write!(f, "{dest} for the process tree of pid {pid}"),
            Self::Hash { sha256 } => write!(f, "files with SHA-256 {sha256}"),
        }
    }
}

/// How an action went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Carried out.
    Done,
    /// Not carried out: it would have touched something protected.
    Refused,
    /// Tried, and it did not work.
    Failed,
    /// Observe mode: what would have been done.
    Observed,
    /// Waits for a person (`vigil-sensor approve` or `deny`).
    Pending,
    /// Its target was already gone (the process exited, the file was removed): nothing was
    /// left to do.
    NothingToDo,
}

/// The file metadata a quarantine or remediation keeps, to give the file back as it was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub sha256: String,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: u32,
    pub atime_ns: i64,
    pub mtime_ns: i64,
}

/// How to reverse an action, with what that needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Undo {
    /// Nothing was changed (refused, failed, observed, pending).
    NothingToUndo,
    /// Cannot be reversed (a killed process cannot be revived).
    Impossible { why: String },
    /// SIGCONT these processes (pid, start).
    Resume { processes: Vec<(u32, u64)> },
    /// Lift these in-kernel exec blocks.
    Unblock {
        inode: Option<FileId>,
        path: Option<String>,
    },
    /// Move the file back from the vault with its owner, mode and times, and lift its blocks.
    Restore {
        vault: PathBuf,
        path: String,
        meta: FileMeta,
        inode: Option<FileId>,
        /// Its writer still held it open when it was moved aside: `meta` is the content at
        /// that moment, and what the writer added later went into the vault copy too, so
        /// its hash is checked against the copy's own (taken when the writer finished).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        growing: bool,
    },
    /// Thaw the cgroup holding a frozen tree, move its processes back where they were, and
    /// remove it.
    Thaw { group: TreeGroupRef },
    /// Lift host isolation.
    EndIsolation,
    /// Lift a destination block; a block for one tree also dissolves the tree's cgroup.
    LiftBlock {
        dest: Endpoint,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<TreeGroupRef>,
    },
    /// Put removed lines back, each at its former line number (0-based).
    PutBack {
        path: String,
        lines: Vec<(usize, String)>,
    },
    /// Write back what a persistence file held before a remediation reverted it to its
    /// baseline (lines had been changed in place, not only added).
    WriteBack { path: String, content: String },
    /// Forget a blocked hash, and lift the in-kernel blocks of the files found with it.
    ForgetHash {
        sha256: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<(FileId, String)>,
    },
}

/// A cgroup the response made for a process tree, and where its processes came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeGroupRef {
    pub path: PathBuf,
    /// Its cgroup id (the kernel's key for a block scoped to it).
    pub id: u64,
    /// Each process moved in, with its cgroup before (relative to the cgroup v2 mount).
    pub origins: Vec<(u32, String)>,
    /// Whether this action made the group (a freeze that fails removes only a group it made;
    /// an undo removes a group once no action in force holds it, whoever made it).
    #[serde(default = "yes")]
    pub created: bool,
}

fn yes() -> bool {
    true
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// When the record was journaled (boot clock, ns).
    pub time_ns: u64,
    /// When the action took hold, where that comes before its journaling: a freeze holds its
    /// tree from the moment every member is stopped (SIGSTOP), then moves it into a freezer
    /// cgroup, which waits for the kernel to migrate the tasks (5 to 25 ms on a busy host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_ns: Option<u64>,
    pub incident: String,
    /// `kill`, `block_exec`, `quarantine`, `remediate`, `freeze`... or `undo`, `approve`, `deny`.
    pub action: Verb,
    pub target: Target,
    pub reason: String,
    /// Alert ids (and the rule) that led here.
    pub evidence: Vec<String>,
    /// The policy keys the decision rests on.
    pub policy_clause: String,
    pub status: Status,
    pub detail: String,
    pub undo: Undo,
    /// The record this one settles (an undo, or the approval or denial of a pending action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settles: Option<String>,
    /// Who asked, for actions a person triggered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// When an action that lapses (a fleet block) is undone by expiry (Unix time, ns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ns: Option<u64>,
}

/// What a record does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Verb {
    Act(Action),
    Settle(Settle),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settle {
    Undo,
    Deny,
}

/// Where an action stands once the whole journal is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Done, and in force (or done for good, as a kill).
    InForce,
    Undone,
    /// Pending approval.
    Pending,
    /// Pending, then approved: the approving record carries the outcome.
    Approved,
    Denied,
    /// Refused, failed or observed: nothing in force.
    Closed,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open the action journal {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the action journal {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct Journal {
    path: PathBuf,
    file: crate::host::durable::SyncedFile,
    records: Vec<Record>,
    /// Where each record is in `records`, by id; and the last record that settles each one:
    /// a record's state is two lookups, however long the journal.
    by_id: std::collections::HashMap<String, usize>,
    settled_by: std::collections::HashMap<String, usize>,
    /// Lines that could not be read (kept in the file, reported).
    pub unreadable: usize,
}

/// Reads a journal file; unreadable lines are counted, never fatal.
pub fn read(path: &Path) -> std::io::Result<(Vec<Record>, usize)> {
    let read = crate::host::jsonl::read(path)?;
    Ok((read.records, read.unreadable))
}

impl Journal {
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let open_err = |source| JournalError::Open {
            path: path.to_owned(),
            source,
        };
        let (records, unreadable) = read(path).map_err(open_err)?;
        let file = crate::host::durable::SyncedFile::open_log(path).map_err(open_err)?;
        let mut j = Self {
            path: path.to_owned(),
            file,
            records: Vec::new(),
            by_id: Default::default(),
            settled_by: Default::default(),
            unreadable,
        };
        for r in records {
            j.index(r);
        }
        Ok(j)
    }

    fn index(&mut self, r: Record) {
        let at = self.records.len();
        self.by_id.entry(r.id.clone()).or_insert(at);
        if let Some(s) = &r.settles {
            self.settled_by.insert(s.clone(), at);
        }
        self.records.push(r);
    }

    /// Appends `r`; it is synced to disk within one sync, off the caller's thread.
    pub fn append(&mut self, r: Record) -> Result<&Record, JournalError> {
        let write_err = |source| JournalError::Write {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(&r).map_err(|e| write_err(e.into()))?;
        line.push(b'\n');
        self.file.append(&line).map_err(write_err)?;
        let at = self.records.len();
        self.index(r);
        Ok(&self.records[at])
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn get(&self, id: &str) -> Option<&Record> {
        self.by_id.get(id).and_then(|&i| self.records.get(i))
    }

    /// The highest sequence number used by ids of the form `PREFIX-N`.
    pub fn last_seq(&self) -> u64 {
        self.records
            .iter()
            .filter_map(|r| r.id.rsplit('-').next()?.parse().ok())
            .max()
            .unwrap_or(0)
    }

    /// Where the action `id` stands.
    pub fn state(&self, id: &str) -> Option<State> {
        let r = self.get(id)?;
        let settled_by = self.settled_by.get(id).and_then(|&i| self.records.get(i));
        Some(match (r.status, settled_by.map(|s| (s.action, s.status))) {
            (Status::Done, Some((Verb::Settle(Settle::Undo), Status::Done))) => State::Undone,
            (Status::Done, _) => State::InForce,
            (Status::Pending, Some((Verb::Settle(Settle::Deny), _))) => State::Denied,
            (Status::Pending, Some((Verb::Act(_), _))) => State::Approved,
            (Status::Pending, _) => State::Pending,
            _ => State::Closed,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, action: Verb, status: Status, settles: Option<&str>) -> Record {
        Record {
            id: id.into(),
            effective_ns: None,
            time_ns: 1,
            incident: "inc-1".into(),
            action,
            target: Target::File {
                path: "/tmp/x".into(),
                id: None,
            },
            reason: "r".into(),
            evidence: vec![],
            policy_clause: "c".into(),
            status,
            detail: String::new(),
            undo: Undo::NothingToUndo,
            settles: settles.map(str::to_owned),
            requested_by: None,
            expires_ns: None,
        }
    }

    #[test]
    fn the_fold_says_where_each_action_stands_and_survives_a_reopen() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("actions.jsonl");
        let mut j = Journal::open(&path).expect("open");
        let q = Verb::Act(Action::Quarantine);
        j.append(rec("a-1", q, Status::Done, None)).expect("append");
        j.append(rec("a-2", q, Status::Pending, None))
            .expect("append");
        j.append(rec("a-3", q, Status::Pending, None))
            .expect("append");
        j.append(rec("a-4", q, Status::Refused, None))
            .expect("append");
        j.append(rec("a-5", q, Status::Done, Some("a-2")))
            .expect("approval");
        j.append(rec(
            "a-6",
            Verb::Settle(Settle::Deny),
            Status::Done,
            Some("a-3"),
        ))
        .expect("denial");
        j.append(rec(
            "a-7",
            Verb::Settle(Settle::Undo),
            Status::Done,
            Some("a-1"),
        ))
        .expect("undo");
        // A line that is not a record is kept and counted, never fatal.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{not json\n"))
            .expect("corrupt");
        let j = Journal::open(&path).expect("reopen");
        assert_eq!(j.unreadable, 1);
        assert_eq!(j.records().len(), 7);
        assert_eq!(j.state("a-1"), Some(State::Undone));
        assert_eq!(j.state("a-2"), Some(State::Approved));
        assert_eq!(j.state("a-3"), Some(State::Denied));
        assert_eq!(j.state("a-4"), Some(State::Closed));
        assert_eq!(j.state("a-5"), Some(State::InForce));
        assert_eq!(j.last_seq(), 7);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
