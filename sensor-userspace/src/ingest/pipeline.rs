//! From ring-buffer bytes to published events: decode, join the argument vector to its exec,
//! apply to the process table, publish. Free of I/O except the sink it is given, so it is
//! tested without a kernel.

use std::collections::BTreeMap;

use ahash::{HashMap, HashMapExt};

use sensor_common::{
    decode::{KernelEvent, decode},
    record::EventKind,
};
use serde::{Deserialize, Serialize};

use crate::{
    host::clock::BootClock,
    ingest::interpret::{Resolver, error_name, interpret},
    model::events::{ANCESTRY_DEPTH, Event, ProcessRef, What},
    model::graph::Graph,
    model::process_table::{ProcessKey, ProcessTable},
};

/// A later stage that sees every published event with the model as it stands at that event
/// (detection and triage, wired in by the daemon): the pipeline calls down to nothing above
/// it. The process table is lent mutably, for what the stage marks on a process.
pub trait Observer {
    /// False when it would do nothing with events (no rules): the pipeline then builds none
    /// for it.
    fn wants_events(&self) -> bool {
        true
    }
    fn observe(
        &mut self,
        event: &Event,
        table: &mut ProcessTable,
        graph: &Graph,
        clock: &BootClock,
    );
    /// Periodic upkeep (the pipeline's tick).
    fn upkeep(&mut self, now_boot_ns: u64, table: &ProcessTable, graph: &Graph, clock: &BootClock);
    /// Writes out what it keeps, when it changed.
    fn flush(&mut self, table: &ProcessTable, graph: &Graph, clock: &BootClock);
}

/// No later stage: events go to the sink alone.
pub struct NoObserver;

impl Observer for NoObserver {
    fn observe(&mut self, _: &Event, _: &mut ProcessTable, _: &Graph, _: &BootClock) {}
    fn upkeep(&mut self, _: u64, _: &ProcessTable, _: &Graph, _: &BootClock) {}
    fn flush(&mut self, _: &ProcessTable, _: &Graph, _: &BootClock) {}
}

/// Where published events go.
pub trait Sink {
    fn publish(&mut self, event: &Event);
    fn flush(&mut self) {}
    /// False when published events go nowhere: the pipeline then does not build them.
    fn wants_events(&self) -> bool {
        true
    }
}

/// A sink that drops everything (no `--events-out`).
pub struct Discard;

impl Sink for Discard {
    fn publish(&mut self, _: &Event) {}
    fn wants_events(&self) -> bool {
        false
    }
}

/// Counts per event kind, as userspace saw them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub received: u64,
}

/// An argument vector waiting for its exec.
struct PendingArgs {
    boot_ns: u64,
    argv: Vec<String>,
    truncated: bool,
}

/// The captured environment of an exec call, waiting for its exec.
struct PendingEnv {
    boot_ns: u64,
    vars: Vec<String>,
    truncated: bool,
}

/// The paths of files recently named by path, by identity: what an fd-only call (fsetxattr,
/// futimens, chattr's ioctl, fchmod) on the same inode is resolved to when the process is
/// gone before /proc can say (the kernel gives the inode and its last path component).
#[derive(Default)]
struct KnownFiles {
    paths: HashMap<sensor_common::decode::FileId, String>,
    order: std::collections::VecDeque<sensor_common::decode::FileId>,
}

/// Inodes whose paths are remembered.
const KNOWN_FILES: usize = 8192;

impl KnownFiles {
    fn files(what: &mut What) -> Option<&mut crate::model::events::FileRef> {
        match what {
            What::Open { file, .. }
            | What::Chmod { file, .. }
            | What::Chown { file, .. }
            | What::Xattr { file, .. }
            | What::Utimes { file, .. }
            | What::SetFlags { file, .. } => Some(file),
            _ => None,
        }
    }

    /// Remembers the path of a file an open named with its inode (opens are where paths
    /// and inodes come together).
    fn learn(&mut self, what: &What) {
        let What::Open {
            file:
                crate::model::events::FileRef {
                    id: Some(id),
                    path: Some(path),
                    resolved: true,
                    ..
                },
            ..
        } = what
        else {
            return;
        };
        if self.paths.get(id) == Some(path) {
            return;
        }
        if self.paths.insert(*id, path.clone()).is_none() {
            self.order.push_back(*id);
            if self.order.len() > KNOWN_FILES
                && let Some(old) = self.order.pop_front()
            {
                self.paths.remove(&old);
            }
        }
    }

    fn resolve(&self, what: &mut What) {
        if let Some(f) = Self::files(what)
            && !f.resolved
            && let Some(path) = f.id.and_then(|id| self.paths.get(&id))
        {
            f.path = Some(path.clone());
            f.resolved = true;
        }
    }
}

/// How long an argument vector waits for its exec before it is forgotten (a failed exec).
const PENDING_ARGS_TTL_NS: u64 = 10 * 1_000_000_000;

pub struct Pipeline<S: Sink, O: Observer = NoObserver> {
    pub table: ProcessTable,
    pub graph: Graph,
    sink: S,
    resolver: Box<dyn Resolver + Send>,
    clock: BootClock,
    pending: HashMap<u32, PendingArgs>,
    pending_env: HashMap<u32, PendingEnv>,
    known_files: KnownFiles,
    pidfds: super::pidfds::Pidfds,
    /// The environment variables captured at exec (the kernel selects by their first bytes);
    /// None keeps whatever the kernel sent.
    env_names: Option<std::collections::HashSet<String>>,
    seen: BTreeMap<&'static str, u64>,
    decode_errors: u64,
    observer: Option<O>,
    /// When set, only events of processes in these cgroups are kept (see [`Scope`]).
    scope: Option<Scope>,
    out_of_scope: u64,
}

/// The cgroup subtree a sensor watches when it stands for one container or one simulated
/// host rather than the whole machine: the ids of the subtree's cgroups, refreshed as it grows.
pub struct Scope {
    root: std::path::PathBuf,
    ids: std::collections::HashSet<u64>,
}

impl Scope {
    pub fn new(root: std::path::PathBuf) -> Self {
        let mut s = Self {
            root,
            ids: Default::default(),
        };
        s.refresh();
        s
    }

    /// Re-reads the subtree's cgroup ids (cgroups made since appear).
    pub fn refresh(&mut self) {
        fn walk(dir: &std::path::Path, ids: &mut std::collections::HashSet<u64>, depth: usize) {
            if let Ok(id) = crate::host::cgroup::id(dir) {
                ids.insert(id);
            }
            if depth == 0 {
                return;
            }
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), ids, depth - 1);
                }
            }
        }
        let mut ids = std::collections::HashSet::new();
        walk(&self.root, &mut ids, 8);
        self.ids = ids;
    }

    pub fn contains(&self, cgroup_id: u64) -> bool {
        self.ids.contains(&cgroup_id)
    }

    /// Whether process `pid` is in the subtree now (for seeding from /proc).
    pub fn holds_pid(&self, pid: u32, mount: &std::path::Path) -> bool {
        crate::host::cgroup::of_pid(pid)
            .and_then(|rel| crate::host::cgroup::id(&mount.join(rel.trim_start_matches('/'))).ok())
            .is_some_and(|id| self.contains(id))
    }
}

impl<S: Sink> Pipeline<S, NoObserver> {
    pub fn new(
        table: ProcessTable,
        mut graph: Graph,
        sink: S,
        clock: BootClock,
        resolver: Box<dyn Resolver + Send>,
    ) -> Self {
        // Lineage of the processes read from /proc.
        for p in table.iter() {
            graph.spawned(0, p.parent, p.key);
        }
        Self {
            table,
            graph,
            sink,
            resolver,
            clock,
            pending: HashMap::new(),
            pending_env: HashMap::new(),
            known_files: KnownFiles::default(),
            pidfds: Default::default(),
            env_names: None,
            seen: EventKind::ALL.iter().map(|k| (k.name(), 0)).collect(),
            decode_errors: 0,
            observer: None,
            scope: None,
            out_of_scope: 0,
        }
    }
}

impl<S: Sink, O: Observer> Pipeline<S, O> {
    /// Keeps, of the environment variables the kernel selects, only these names.
    pub fn with_env_names(mut self, names: &[String]) -> Self {
        self.env_names = Some(names.iter().cloned().collect());
        self
    }

    fn env_wanted(&self, var: &str) -> bool {
        let name = var.split_once('=').map_or(var, |(n, _)| n);
        self.env_names.as_ref().is_none_or(|s| s.contains(name))
    }

    /// The script an interpreter was started on: resolved against its cwd, with its identity
    /// and first writer when known.
    fn script(&self, pid: u32, arg: &str) -> crate::model::events::Script {
        let (path, _) = crate::ingest::interpret::resolve(
            self.resolver.as_ref(),
            pid,
            crate::ingest::interpret::AT_FDCWD,
            arg,
        );
        let id = std::fs::metadata(&path).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            sensor_common::decode::FileId {
                dev: m.dev(),
                ino: m.ino(),
            }
        });
        let writer = self.graph.first_writer(&path);
        crate::model::events::Script {
            id,
            writer_networked: writer.is_some_and(|w| self.graph.networked(&w)),
            writer: writer.and_then(|w| self.table.get(&w)).map(Into::into),
            path,
        }
    }

    /// Hands every event from now on to `observer`.
    pub fn with_observer<O2: Observer>(self, observer: O2) -> Pipeline<S, O2> {
        Pipeline {
            table: self.table,
            graph: self.graph,
            sink: self.sink,
            resolver: self.resolver,
            clock: self.clock,
            pending: self.pending,
            pending_env: self.pending_env,
            known_files: self.known_files,
            pidfds: self.pidfds,
            env_names: self.env_names,
            seen: self.seen,
            decode_errors: self.decode_errors,
            observer: Some(observer),
            scope: self.scope,
            out_of_scope: self.out_of_scope,
        }
    }

    pub fn observer(&self) -> Option<&O> {
        self.observer.as_ref()
    }

    pub fn observer_mut(&mut self) -> Option<&mut O> {
        self.observer.as_mut()
    }

    /// Lends the observer the model as it stands (None without an observer).
    pub fn with_model<R>(
        &mut self,
        f: impl FnOnce(&mut O, &ProcessTable, &Graph, &BootClock) -> R,
    ) -> Option<R> {
        let o = self.observer.as_mut()?;
        Some(f(o, &self.table, &self.graph, &self.clock))
    }

    /// Takes one raw record. A malformed record is counted and skipped with a log line.
    /// Keeps only the events of processes in `scope`.
    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
        self
    }

    pub fn scope_mut(&mut self) -> Option<&mut Scope> {
        self.scope.as_mut()
    }

    /// Events dropped because their process is outside the scope.
    pub fn out_of_scope(&self) -> u64 {
        self.out_of_scope
    }

    pub fn ingest(&mut self, bytes: &[u8]) {
        match decode(bytes) {
            Ok(event) => {
                if let Some(scope) = &self.scope
                    && !scope.contains(event.task().cgroup_id)
                {
                    self.out_of_scope += 1;
                    return;
                }
                self.apply(event);
            }
            Err(e) => {
                self.decode_errors += 1;
                // Log the first few, then every 1000th, so a flood cannot flood the log.
                if self.decode_errors <= 10 || self.decode_errors.is_multiple_of(1000) {
                    tracing::warn!(error = %e, len = bytes.len(), total = self.decode_errors, "skipped a malformed ring-buffer record");
                }
            }
        }
    }

    // Long by design: one arm per event kind, each what that event changes in the process table.

    pub fn apply(&mut self, event: KernelEvent) {
        *self.seen.entry(event.kind().name()).or_default() += 1;
        match event {
            KernelEvent::ExecArgs {
                boot_ns,
                task,
                argv,
                truncated,
                unreadable,
            } => {
                self.pending.insert(
                    task.pid,
                    PendingArgs {
                        boot_ns,
                        argv,
                        truncated: truncated || unreadable,
                    },
                );
            }
            KernelEvent::ExecEnv {
                boot_ns,
                task,
                vars,
                truncated,
            } => {
                let vars = vars.into_iter().filter(|v| self.env_wanted(v)).collect();
                self.pending_env.insert(
                    task.pid,
                    PendingEnv {
                        boot_ns,
                        vars,
                        truncated,
                    },
                );
            }
            KernelEvent::Fork { boot_ns, task } => {
                let key = self.table.on_fork(&task);
                let parent = self.table.get(&key).and_then(|p| p.parent);
                self.graph.spawned(boot_ns, parent, key);
                self.publish(What::Fork, boot_ns, task.pid, key, None);
            }
            KernelEvent::Exec {
                boot_ns,
                task,
                old_pid,
                filename,
                filename_truncated,
                exe,
                exe_unlinked,
                exe_memfd,
                blocked,
                stdio,
                stdio_ino,
            } => {
                let argv = self.pending.remove(&old_pid).map(|a| (a.argv, a.truncated));
                let (env, env_truncated) = self
                    .pending_env
                    .remove(&old_pid)
                    .map(|e| (e.vars, e.truncated))
                    .unwrap_or_default();
                if filename_truncated {
                    tracing::debug!(pid = task.tgid, "exec filename truncated");
                }
                // A relative path ("./payload") is resolved against the cwd while it lasts.
                let (filename, _) = crate::ingest::interpret::resolve(
                    self.resolver.as_ref(),
                    task.tgid,
                    crate::ingest::interpret::AT_FDCWD,
                    &filename,
                );
                let key = self.table.on_exec(&task, &filename, argv);
                let (argv, argv_truncated) = self
                    .table
                    .get(&key)
                    .map(|p| (p.argv.clone(), p.argv_truncated))
                    .unwrap_or_default();
                let script = crate::ingest::interpret::script_of(&filename, &argv)
                    .map(|arg| self.script(task.tgid, &arg));
                let what = What::Exec {
                    argv,
                    argv_truncated,
                    exe_file: exe,
                    fileless: exe_unlinked,
                    memfd: exe_memfd,
                    blocked,
                    stdio,
                    stdio_inodes: stdio_ino,
                    env,
                    env_truncated,
                    script,
                };
                if let Some(p) = self.table.get(&key) {
                    self.graph.record(boot_ns, p, &what, true, None);
                }
                self.publish(what, boot_ns, old_pid, key, None);
            }
            KernelEvent::Exit {
                boot_ns,
                task,
                status,
            } => {
                let key = self.table.on_exit(&task, boot_ns, status);
                self.pending.remove(&task.pid);
                self.pending_env.remove(&task.pid);
                if task.pid == task.tgid {
                    self.pidfds.forget(task.tgid);
                }
                self.publish(What::Exit { exit: status }, boot_ns, task.pid, key, None);
            }
            KernelEvent::Syscall {
                boot_ns,
                task,
                call,
            } => {
                let key = self.table.touch(&task);
                let resolver = self.pidfds.over(self.resolver.as_ref());
                let mut what = interpret(&call, task.tgid, &resolver);
                self.pidfds.learn(task.tgid, &what, call.ret);
                self.known_files.resolve(&mut what);
                self.known_files.learn(&what);
                let target = what
                    .target_pid()
                    .and_then(|t| u32::try_from(t).ok())
                    .and_then(|t| self.table.live(t))
                    .map(|p| p.key);
                // A non-blocking connect returns EINPROGRESS: under way, not failed (python
                // with a timeout, curl and Go all connect that way).
                let ok = call.ret >= 0
                    || (matches!(what, What::Connect { .. })
                        && call.ret == -i64::from(libc::EINPROGRESS));
                if let Some(p) = self.table.get(&key) {
                    self.graph.record(boot_ns, p, &what, ok, target);
                }
                self.publish(
                    what,
                    boot_ns,
                    task.pid,
                    key,
                    Some((call.call.name(), call.ret, call.repeats)),
                );
            }
        }
    }

    fn publish(
        &mut self,
        what: What,
        boot_ns: u64,
        tid: u32,
        key: ProcessKey,
        syscall: Option<(&'static str, i64, u32)>,
    ) {
        let observed = self.observer.as_ref().is_some_and(O::wants_events);
        if !self.sink.wants_events() && !observed {
            return;
        }
        let Some(p) = self.table.get(&key) else {
            return;
        };
        let ancestry = if matches!(what, What::Exec { .. }) {
            self.table
                .ancestors(&key, ANCESTRY_DEPTH)
                .into_iter()
                .map(ProcessRef::from)
                .collect()
        } else {
            Vec::new()
        };
        let event = Event {
            what,
            time_ns: self.clock.to_unix_ns(boot_ns),
            boot_ns,
            pid: key.pid,
            tid,
            start: key.start,
            ppid: p.ppid,
            parent: p.parent,
            uid: p.uid,
            gid: p.gid,
            euid: p.euid,
            egid: p.egid,
            comm: p.comm.clone(),
            cgroup_id: p.cgroup_id,
            exe: p.exe.clone(),
            syscall: syscall.map(|(name, _, _)| name.to_owned()),
            ret: syscall.map(|(_, ret, _)| ret),
            error: syscall.and_then(|(_, ret, _)| error_name(ret)),
            repeats: syscall.map_or(0, |(_, _, repeats)| repeats),
            ancestry,
        };
        if let Some(o) = self.observer.as_mut().filter(|_| observed) {
            o.observe(&event, &mut self.table, &self.graph, &self.clock);
        }
        if self.sink.wants_events() {
            self.sink.publish(&event);
        }
    }

    /// Periodic upkeep: age out exited processes, forget argument vectors of failed execs.
    pub fn tick(&mut self, now_boot_ns: u64) {
        for gone in self.table.age_out(now_boot_ns) {
            self.graph.forget_process(&gone);
        }
        self.pending
            .retain(|_, a| now_boot_ns.saturating_sub(a.boot_ns) < PENDING_ARGS_TTL_NS);
        self.pending_env
            .retain(|_, e| now_boot_ns.saturating_sub(e.boot_ns) < PENDING_ARGS_TTL_NS);
        if let Some(o) = &mut self.observer {
            o.upkeep(now_boot_ns, &self.table, &self.graph, &self.clock);
        }
        self.sink.flush();
    }

    pub fn flush(&mut self) {
        self.sink.flush();
        if let Some(o) = &mut self.observer {
            o.flush(&self.table, &self.graph, &self.clock);
        }
    }

    pub fn seen(&self) -> &BTreeMap<&'static str, u64> {
        &self.seen
    }

    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }
}

#[cfg(test)]
mod tests {
    use sensor_common::{
        decode::testing::{self, bytes_of, exec_args, header, task_info},
        process::{ExitRecord, ForkRecord},
    };

    use super::*;
    use crate::model::process_table::TableLimits;

    #[derive(Default)]
    struct Collect(Vec<Event>);
    impl Sink for Collect {
        fn publish(&mut self, e: &Event) {
            self.0.push(e.clone());
        }
    }

    fn pipeline() -> Pipeline<Collect> {
        Pipeline::new(
            ProcessTable::new(100, TableLimits::default()),
            Graph::new("test".into(), crate::model::graph::GraphLimits::default()),
            Collect::default(),
            BootClock::fixed(0),
            Box::new(crate::ingest::interpret::NoResolver),
        )
    }

    fn exec_record(pid: u32, ppid: u32, path: &str) -> Vec<u8> {
        bytes_of(&testing::exec_record(
            task_info(pid, pid, ppid, "echo"),
            path,
        ))
    }

    #[test]
    fn exec_gets_its_argv_and_parent() {
        let mut p = pipeline();
        p.ingest(&bytes_of(&ForkRecord {
            header: header(EventKind::Fork, 0, 1),
            task: task_info(42, 42, 7, "sh"),
        }));
        p.ingest(&exec_args(
            task_info(42, 42, 7, "sh"),
            &["/bin/echo", "alpha", "beta gamma"],
            0,
        ));
        p.ingest(&exec_record(42, 7, "/bin/echo"));
        let e = p.sink().0.last().expect("an exec event").clone();
        assert_eq!(e.exe.as_deref(), Some("/bin/echo"));
        match &e.what {
            What::Exec { argv, .. } => assert_eq!(argv, &["/bin/echo", "alpha", "beta gamma"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(e.ppid, 7);
    }

    #[test]
    fn corrupt_records_are_counted_and_skipped() {
        let mut p = pipeline();
        let good = exec_record(42, 7, "/bin/true");
        p.ingest(&good[..good.len() / 2]);
        p.ingest(&[0xff; 3]);
        p.ingest(&[]);
        p.ingest(&good);
        assert_eq!(p.decode_errors(), 3);
        assert_eq!(p.sink().0.len(), 1, "the good record still goes through");
    }

    #[test]
    fn exit_status_is_published() {
        let mut p = pipeline();
        p.ingest(&bytes_of(&ExitRecord {
            header: header(EventKind::Exit, 0, 3),
            task: task_info(42, 42, 7, "sh"),
            exit_code: 3 << 8,
            _pad: 0,
        }));
        let e = p.sink().0.last().expect("an exit event");
        assert_eq!(
            e.what,
            What::Exit {
                exit: sensor_common::decode::ExitStatus::Exited { code: 3 }
            }
        );
    }
}
