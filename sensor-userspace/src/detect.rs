//! Detection: runs the loaded rules over each event and turns matches into alerts.

use ahash::{HashMap, HashMapExt};

use crate::{
    alerts::{Alert, AlertProcess, RuleRef},
    events::{ANCESTRY_DEPTH, Event, ProcessRef, What},
    process_table::ProcessTable,
    rules::sigma::{
        SigmaRule,
        fields::{Category, EventFields, category_of},
        rule::Prepared,
    },
};

/// The rule set, bucketed by log source so an event meets only the rules that can match it.
pub struct Detector {
    by_category: HashMap<Category, Vec<SigmaRule>>,
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
    pub fn new(rules: Vec<SigmaRule>, host: String, started_ns: u64) -> Self {
        let mut by_category: HashMap<Category, Vec<SigmaRule>> = HashMap::new();
        for r in rules {
            by_category.entry(r.category).or_default().push(r);
        }
        Self {
            by_category,
            host,
            id_prefix: format!("{started_ns:x}"),
            next: 0,
            users: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_category.values().all(Vec::is_empty)
    }

    pub fn rule_count(&self) -> usize {
        self.by_category.values().map(Vec::len).sum()
    }

    fn name_of(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| user_name(uid))
            .clone()
    }

    /// Alerts for `event`, one per matching rule.
    pub fn check(&mut self, event: &Event, table: &ProcessTable) -> Vec<Alert> {
        let Some(category) = category_of(&event.what) else {
            return Vec::new();
        };
        if self.by_category.get(&category).is_none_or(Vec::is_empty) {
            return Vec::new();
        }
        let key = crate::process_table::ProcessKey {
            pid: event.pid,
            start: event.start,
        };
        let process = table.get(&key);
        let argv: &[String] = match &event.what {
            What::Exec { argv, .. } => argv,
            _ => process.map_or(&[][..], |p| &p.argv[..]),
        };
        let parent = event.parent.and_then(|k| table.get(&k));
        let user = self.name_of(event.euid);
        let parent_user = parent.and_then(|p| self.name_of(p.euid));
        let fields = EventFields {
            event,
            argv,
            parent,
            user: user.as_deref(),
            parent_user: parent_user.as_deref(),
        };
        // One prepared event for every rule: each field is computed and lower-cased once.
        let prepared = Prepared::new(&fields);
        let rules = self.by_category.get(&category).map_or(&[][..], |r| &r[..]);
        let hits: Vec<RuleRef> = rules
            .iter()
            .filter(|r| r.matches_prepared(&prepared))
            .map(RuleRef::from)
            .collect();
        if hits.is_empty() {
            return Vec::new();
        }
        let ancestry: Vec<ProcessRef> = table
            .ancestors(&key, ANCESTRY_DEPTH)
            .into_iter()
            .map(ProcessRef::from)
            .collect();
        let entities = entities(&event.what);
        hits.into_iter()
            .map(|rule| {
                self.next += 1;
                Alert {
                    id: format!("{}-{}", self.id_prefix, self.next),
                    time_ns: event.time_ns,
                    host: self.host.clone(),
                    rule,
                    process: AlertProcess {
                        pid: event.pid,
                        start: event.start,
                        exe: event.exe.clone(),
                        cmdline: argv.join(" "),
                        uid: event.uid,
                        euid: event.euid,
                        user: user.clone(),
                        ancestry: ancestry.clone(),
                    },
                    entities: entities.clone(),
                    evidence: vec![event.clone()],
                }
            })
            .collect()
    }
}

fn entities(what: &What) -> Vec<String> {
    let mut out = Vec::new();
    match what {
        What::Exec { .. } => {}
        What::Open { file, .. } => out.extend(file.path.clone()),
        What::Rename { file, to } => {
            out.extend(file.path.clone());
            out.extend(to.path.clone());
        }
        What::Connect { net } | What::Accept { net } => {
            out.extend(net.remote.map(|a| a.to_string()));
            out.extend(net.unix_path.clone());
        }
        _ => {}
    }
    out
}
