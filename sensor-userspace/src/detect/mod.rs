//! Detection: runs the loaded rules over each event and turns matches into findings for
//! triage. Sigma rules see one event; behaviour rules also see the process table and the graph
//! around it, through [`LiveFacts`].

pub mod rules;

use std::path::PathBuf;

use ahash::{HashMap, HashMapExt};

use crate::{
    detect::rules::{
        BehaviourRule, SigmaRule,
        behaviour::{
            engine::{Engine, EngineStats},
            fields::{Facts, ProcFacts, View},
        },
        sigma::{
            fields::{Category, EventFields, category_of},
            rule::Prepared,
        },
    },
    model::events::{ANCESTRY_DEPTH, Event, ProcessRef, What},
    model::graph::Graph,
    model::process_table::{ProcessKey, ProcessTable},
    triage::alerts::{AlertProcess, Finding, RuleRef},
};

/// The sensor's own identity, which rules about tampering with it need.
#[derive(Clone, Debug, Default)]
pub struct SensorSelf {
    pub pid: u32,
    /// Files and directories (ending in `/`) that belong to the sensor.
    pub paths: Vec<String>,
    /// The sensor's eBPF programs, maps and links, by kind and id (ids are unique per kind).
    pub bpf_objects: std::sync::Arc<
        std::sync::RwLock<std::collections::BTreeSet<(crate::host::bpf_objects::ObjectKind, u32)>>,
    >,
}

impl SensorSelf {
    /// This process, its binary, and the given state, policy and rule paths.
    pub fn current(paths: impl IntoIterator<Item = PathBuf>) -> Self {
        let mut out: Vec<String> = std::fs::read_link("/proc/self/exe")
            .ok()
            .into_iter()
            .chain(paths)
            .map(|p| {
                let mut s = p.to_string_lossy().into_owned();
                if p.is_dir() && !s.ends_with('/') {
                    s.push('/');
                }
                s
            })
            .collect();
        out.sort();
        out.dedup();
        Self {
            pid: std::process::id(),
            paths: out,
            bpf_objects: Default::default(),
        }
    }

    /// Records `ids` as the sensor's own eBPF objects (shared by every clone).
    pub fn add_bpf_objects(
        &self,
        ids: impl IntoIterator<Item = (crate::host::bpf_objects::ObjectKind, u32)>,
    ) {
        if let Ok(mut set) = self.bpf_objects.write() {
            set.extend(ids);
        }
    }

    /// Whether the object `BPF_*_GET_FD_BY_ID` (command `cmd`) asks for by `id` is ours.
    pub fn owns_bpf_object(&self, cmd: u64, id: u32) -> bool {
        let Some(kind) = crate::host::bpf_objects::ObjectKind::of_command(cmd) else {
            return false;
        };
        self.bpf_objects
            .read()
            .is_ok_and(|s| s.contains(&(kind, id)))
    }

    pub fn owns(&self, path: &str) -> bool {
        self.paths.iter().any(|p| {
            if p.ends_with('/') {
                path.starts_with(p.as_str()) || path == p.trim_end_matches('/')
            } else {
                path == p
            }
        })
    }
}

/// The SHA-256 of every quarantined file still in force: the response fills it, and an exec
/// of a file with one of these hashes is flagged (`hash_blocked`), whatever its path.
#[derive(Clone, Debug, Default)]
pub struct BlockedHashes(std::sync::Arc<std::sync::RwLock<ahash::HashSet<String>>>);

impl BlockedHashes {
    pub fn insert(&self, sha256: &str) {
        if let Ok(mut s) = self.0.write() {
            s.insert(sha256.to_owned());
        }
    }

    pub fn remove(&self, sha256: &str) {
        if let Ok(mut s) = self.0.write() {
            s.remove(sha256);
        }
    }

    pub fn contains(&self, sha256: &str) -> bool {
        self.0.read().is_ok_and(|s| s.contains(sha256))
    }

    pub fn is_empty(&self) -> bool {
        self.0.read().map_or(true, |s| s.is_empty())
    }
}

/// Files larger than this are not hashed at exec.
const MAX_HASHED_EXEC: u64 = 64 << 20;

/// Facts for behaviour rules from the live process table and graph.
pub struct LiveFacts<'a> {
    pub table: &'a ProcessTable,
    pub graph: &'a Graph,
    pub me: &'a SensorSelf,
    pub hashes: &'a BlockedHashes,
}

fn facts_of(p: &crate::model::process_table::Process) -> ProcFacts {
    ProcFacts {
        key: p.key,
        ppid: p.ppid,
        parent: p.parent,
        exe: p.exe.clone(),
        argv: p.argv.clone(),
    }
}

impl Facts for LiveFacts<'_> {
    fn process(&self, key: &ProcessKey) -> Option<ProcFacts> {
        self.table.get(key).map(facts_of)
    }

    fn ancestors(&self, key: &ProcessKey, max: usize) -> Vec<ProcFacts> {
        self.table
            .ancestors(key, max)
            .into_iter()
            .map(facts_of)
            .collect()
    }

    fn first_writer(&self, path: &str) -> Option<ProcessKey> {
        self.graph.first_writer(path)
    }

    fn made_executable(&self, path: &str) -> bool {
        self.graph.made_executable(path)
    }

    fn networked(&self, key: &ProcessKey) -> bool {
        self.graph.networked(key)
    }

    fn serving(&self, key: &ProcessKey) -> bool {
        self.graph.serving(key)
    }

    fn live(&self, pid: u32) -> Option<ProcessKey> {
        self.table.live(pid).map(|p| p.key)
    }

    fn is_sensor(&self, pid: u32) -> bool {
        pid == self.me.pid
    }

    fn is_sensor_path(&self, path: &str) -> bool {
        self.me.owns(path)
    }

    fn is_sensor_bpf_object(&self, cmd: u64, id: u32) -> bool {
        self.me.owns_bpf_object(cmd, id)
    }

    fn hash_blocked(&self, path: &str) -> bool {
        // Only files written since the sensor started are hashed: a dropped copy of a
        // quarantined payload is one; the system's own binaries never pay for it.
        if self.hashes.is_empty() || self.graph.first_writer(path).is_none() {
            return false;
        }
        let small = std::fs::metadata(path).is_ok_and(|m| m.len() <= MAX_HASHED_EXEC);
        small
            && crate::host::hash::sha256(std::path::Path::new(path))
                .is_ok_and(|h| self.hashes.contains(&h))
    }
}

/// Counters for `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DetectStats {
    pub sigma_rules: usize,
    pub behaviour_rules: usize,
    #[serde(flatten)]
    pub engine: EngineStats,
}

/// The rule set, bucketed by log source (Sigma) or event kind (behaviour) so an event meets
/// only the rules that can match it.
pub struct Detector {
    by_category: HashMap<Category, Vec<SigmaRule>>,
    literals: crate::detect::rules::sigma::index::LiteralIndex,
    behaviour: Engine,
    me: SensorSelf,
    hashes: BlockedHashes,
    host: String,
    id_prefix: String,
    next: u64,
    users: HashMap<u32, Option<String>>,
}

fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

impl Detector {
    pub fn new(
        sigma: Vec<SigmaRule>,
        behaviour: Vec<BehaviourRule>,
        me: SensorSelf,
        hashes: BlockedHashes,
        host: String,
        started_ns: u64,
    ) -> Self {
        let mut sigma = sigma;
        let literals = crate::detect::rules::sigma::index::LiteralIndex::build(sigma.iter_mut());
        let mut by_category: HashMap<Category, Vec<SigmaRule>> = HashMap::new();
        for r in sigma {
            by_category.entry(r.category).or_default().push(r);
        }
        Self {
            by_category,
            literals,
            behaviour: Engine::new(behaviour),
            me,
            hashes,
            host,
            id_prefix: format!("{started_ns:x}"),
            next: 0,
            users: HashMap::new(),
        }
    }

    /// Puts a new rule set in force (a push from the controller). Sequences under way in the
    /// behaviour engine start over; alert ids carry on.
    pub fn replace_rules(&mut self, sigma: Vec<SigmaRule>, behaviour: Vec<BehaviourRule>) {
        let mut sigma = sigma;
        self.literals = crate::detect::rules::sigma::index::LiteralIndex::build(sigma.iter_mut());
        self.by_category.clear();
        for r in sigma {
            self.by_category.entry(r.category).or_default().push(r);
        }
        self.behaviour = Engine::new(behaviour);
    }

    pub fn is_empty(&self) -> bool {
        self.rule_count() == 0
    }

    pub fn rule_count(&self) -> usize {
        self.by_category.values().map(Vec::len).sum::<usize>() + self.behaviour.len()
    }

    pub fn stats(&self) -> DetectStats {
        DetectStats {
            sigma_rules: self.by_category.values().map(Vec::len).sum(),
            behaviour_rules: self.behaviour.len(),
            engine: self.behaviour.stats(),
        }
    }

    /// Forgets expired partial matches.
    pub fn expire(&mut self, now_boot_ns: u64) {
        self.behaviour.expire(now_boot_ns);
    }

    fn name_of(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| user_name(uid))
            .clone()
    }

    /// Findings for `event`, one per matching rule.
    pub fn check(&mut self, event: &Event, table: &ProcessTable, graph: &Graph) -> Vec<Finding> {
        let key = ProcessKey {
            pid: event.pid,
            start: event.start,
        };
        let process = table.get(&key);
        let argv: &[String] = match &event.what {
            What::Exec { argv, .. } => argv,
            _ => process.map_or(&[][..], |p| &p.argv[..]),
        };
        let mut hits: Vec<(RuleRef, Vec<Event>, ProcessKey)> = Vec::new();
        if let Some(category) = category_of(&event.what)
            && let Some(rules) = self.by_category.get(&category)
            && !rules.is_empty()
        {
            let parent = event.parent.and_then(|k| table.get(&k));
            let user = self.name_of(event.euid);
            let parent_user = parent.and_then(|p| self.name_of(p.euid));
            let rules = self.by_category.get(&category).map_or(&[][..], |r| &r[..]);
            let fields = EventFields {
                event,
                argv,
                parent,
                user: user.as_deref(),
                parent_user: parent_user.as_deref(),
            };
            // One prepared event for every rule: each field is computed and lower-cased once.
            let prepared = Prepared::with_index(&fields, &self.literals);
            hits.extend(
                rules
                    .iter()
                    .filter(|r| r.matches_prepared(&prepared))
                    .map(|r| (RuleRef::from(r), vec![event.clone()], key)),
            );
        }
        if self.behaviour.wants(event) {
            let facts = LiveFacts {
                table,
                graph,
                me: &self.me,
                hashes: &self.hashes,
            };
            let view = View::new(event, argv, &facts);
            for hit in self.behaviour.check(&view) {
                let rule = RuleRef::from(&self.behaviour.rules()[hit.rule]);
                hits.push((rule, hit.evidence, hit.actor));
            }
        }
        hits.into_iter()
            .map(|(rule, evidence, actor)| self.finding(rule, evidence, actor, event, table))
            .collect()
    }

    fn finding(
        &mut self,
        rule: RuleRef,
        evidence: Vec<Event>,
        actor: ProcessKey,
        event: &Event,
        table: &ProcessTable,
    ) -> Finding {
        self.next += 1;
        let p = table.get(&actor);
        let euid = p.map_or(event.euid, |p| p.euid);
        let cmdline = match &event.what {
            What::Exec { argv, .. } if event.pid == actor.pid => argv.join(" "),
            _ => p.map(|p| p.argv.join(" ")).unwrap_or_default(),
        };
        let mut entities: Vec<String> = Vec::new();
        for e in &evidence {
            for x in entities_of(&e.what) {
                if !entities.contains(&x) {
                    entities.push(x);
                }
            }
        }
        Finding {
            id: format!("{}-{}", self.id_prefix, self.next),
            time_ns: event.time_ns,
            host: self.host.clone(),
            rule,
            process: AlertProcess {
                pid: actor.pid,
                start: actor.start,
                exe: p.and_then(|p| p.exe.clone()).or_else(|| event.exe.clone()),
                cmdline,
                uid: p.map_or(event.uid, |p| p.uid),
                euid,
                user: self.name_of(euid),
                ancestry: table
                    .ancestors(&actor, ANCESTRY_DEPTH)
                    .into_iter()
                    .map(ProcessRef::from)
                    .collect(),
            },
            entities,
            evidence,
        }
    }
}

/// The files and endpoints an event names.
/// The files and endpoints an event names: a finding's `entities`, which exceptions' `path`
/// is matched against.
pub(crate) fn entities_of(what: &What) -> Vec<String> {
    let mut out = Vec::new();
    match what {
        What::Open { file, .. }
        | What::Unlink { file }
        | What::Chmod { file, .. }
        | What::Chown { file, .. }
        | What::Xattr { file, .. }
        | What::Utimes { file, .. }
        | What::SetFlags { file, .. } => out.extend(file.path.clone()),
        What::Exec {
            script: Some(script),
            ..
        } => out.push(script.path.clone()),
        What::Rename { file, to } => {
            out.extend(file.path.clone());
            out.extend(to.path.clone());
        }
        What::Connect { net } | What::Accept { net } => {
            out.extend(net.remote.map(|a| a.to_string()));
            out.extend(net.unix_path.clone());
        }
        What::ModuleLoad { file: Some(f), .. } => out.extend(f.path.clone()),
        _ => {}
    }
    out
}
