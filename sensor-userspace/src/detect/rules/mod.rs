//! Detection rules: Sigma rules ([`sigma`]) and Vigil's behaviour rules ([`behaviour`]),
//! loaded together from rule directories. A file with a `detection` map is Sigma; any other
//! is a behaviour rule. One bad file never stops the others.

pub mod behaviour;
pub mod sigma;

use std::path::{Path, PathBuf};

pub use behaviour::BehaviourRule;
pub use sensor_common::protocol::{RuleFile, RuleSet};
pub use sigma::{RuleError, SigmaRule};

/// The rules shipped in `deploy/rules/`, built into the binary: (file name, text).
pub const SHIPPED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/shipped_rules.rs"));

/// Where `vigil-sensor run` looks for rules when no `--rules` is given; the built-in copy of
/// `deploy/rules/` is used when it does not exist.
pub const INSTALLED_RULES_DIR: &str = "/etc/vigil/rules";

/// A loaded rule of either kind.
#[derive(Clone, Debug)]
pub enum Rule {
    Sigma(SigmaRule),
    Behaviour(BehaviourRule),
}

impl Rule {
    fn id(&self) -> Option<&str> {
        match self {
            Self::Sigma(r) => r.id.as_deref(),
            Self::Behaviour(r) => Some(&r.id),
        }
    }
}

/// What loading gave.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub sigma: Vec<SigmaRule>,
    pub behaviour: Vec<BehaviourRule>,
    /// Files not loaded, each with why.
    pub skipped: Vec<RuleError>,
    /// Files considered (`*.yml`, `*.yaml`).
    pub total: usize,
}

impl LoadReport {
    pub fn loaded(&self) -> usize {
        self.sigma.len() + self.behaviour.len()
    }

    /// Adds one file's text.
    pub fn add(&mut self, text: &str, file: &Path) {
        self.total += 1;
        let rule = match parse(text, file) {
            Ok(r) => r,
            Err(e) => return self.skipped.push(e),
        };
        if let Some(id) = rule.id() {
            let other = self
                .sigma
                .iter()
                .filter(|r| r.id.as_deref() == Some(id))
                .map(|r| &r.file)
                .chain(
                    self.behaviour
                        .iter()
                        .filter(|r| r.id == id)
                        .map(|r| &r.file),
                )
                .next();
            if let Some(other) = other {
                return self.skipped.push(RuleError::Invalid {
                    file: file.to_owned(),
                    line: None,
                    reason: format!("duplicate rule id {id:?} (also in {})", other.display()),
                });
            }
        }
        match rule {
            Rule::Sigma(r) => self.sigma.push(r),
            Rule::Behaviour(r) => self.behaviour.push(r),
        }
    }

    pub fn merge(&mut self, other: LoadReport) {
        self.total += other.total;
        self.skipped.extend(other.skipped);
        self.sigma.extend(other.sigma);
        self.behaviour.extend(other.behaviour);
    }
}

/// Parses one rule file of either kind.
pub fn parse(text: &str, file: &Path) -> Result<Rule, RuleError> {
    sigma::rule::check_shape(text, file)?;
    let doc: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| RuleError::from_yaml(file, &e))?;
    if doc.get("detection").is_some() {
        SigmaRule::parse(text, file).map(Rule::Sigma)
    } else {
        BehaviourRule::parse(text, file).map(Rule::Behaviour)
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        if e.file_type()?.is_dir() {
            yaml_files(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Loads every rule under `dir` (recursively).
pub fn load_dir(dir: &Path) -> std::io::Result<LoadReport> {
    let mut files = Vec::new();
    yaml_files(dir, &mut files)?;
    let mut report = LoadReport::default();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => report.add(&text, &file),
            Err(e) => {
                report.total += 1;
                report.skipped.push(RuleError::Read {
                    file: file.clone(),
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(report)
}

/// Reads every rule file under `dir` into a set to push, named by their paths under `dir`.
pub fn read_set(dir: &Path) -> std::io::Result<RuleSet> {
    let mut paths = Vec::new();
    yaml_files(dir, &mut paths)?;
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let name = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        files.push(RuleFile { name, text });
    }
    Ok(RuleSet::new(files))
}

/// Loads a pushed rule set, refusing it whole unless every file loads and every behaviour
/// rule passes its own test cases: a set that is half right is not put in force. The error
/// names each problem, one per line.
pub fn validate_set(set: &RuleSet) -> Result<LoadReport, SetRefused> {
    set.check().map_err(|e| SetRefused {
        version: set.version.clone(),
        problems: vec![e.to_string()],
    })?;
    let mut report = LoadReport::default();
    for f in &set.files {
        report.add(&f.text, Path::new(&f.name));
    }
    let mut problems: Vec<String> = report.skipped.iter().map(ToString::to_string).collect();
    for rule in &report.behaviour {
        problems.extend(
            behaviour::testcase::run(rule)
                .into_iter()
                .filter(|r| !r.passed)
                .map(|r| format!("{}: test case {:?} fails: {}", r.rule, r.case, r.detail)),
        );
    }
    if report.loaded() == 0 && problems.is_empty() {
        problems.push("the set holds no rule".into());
    }
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(SetRefused {
            version: set.version.clone(),
            problems,
        })
    }
}

/// A pushed rule set refused whole, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule set {version} refused ({} problem(s)):\n{}", .problems.len(), .problems.join("\n"))]
pub struct SetRefused {
    pub version: String,
    pub problems: Vec<String>,
}

/// Writes a validated set as the directory `dir`, written aside first and then renamed into
/// place, so a reader finds the old set or the new one, never a mix. The version goes in
/// `VERSION`.
pub fn install_set(set: &RuleSet, dir: &Path) -> std::io::Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let staging = parent.join(format!(".rules-{}", set.version));
    let _ = std::fs::remove_dir_all(&staging);
    for f in &set.files {
        let path = staging.join(&f.name);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(&path, &f.text)?;
    }
    std::fs::create_dir_all(&staging)?;
    std::fs::write(staging.join(VERSION_FILE), &set.version)?;
    let old = parent.join(".rules-old");
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old)?;
    }
    std::fs::rename(&staging, dir)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// The file beside an installed set that holds its version.
pub const VERSION_FILE: &str = "VERSION";

/// The version of the set installed in `dir`, if it is one.
pub fn installed_version(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(VERSION_FILE))
        .ok()
        .map(|v| v.trim().to_owned())
}

/// The rules built into the binary (a copy of `deploy/rules/`).
pub fn shipped() -> LoadReport {
    let mut report = LoadReport::default();
    for (name, text) in SHIPPED {
        report.add(text, &Path::new("deploy/rules").join(name));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_all_load() {
        let r = shipped();
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        assert!(r.behaviour.len() >= 15);
        assert_eq!(r.loaded(), r.total);
    }

    #[test]
    fn a_pushed_set_is_refused_whole_for_one_bad_file_and_installed_whole_when_good() {
        let shipped = read_set(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules"))
            .expect("read the shipped rules");
        let report = validate_set(&shipped).expect("the shipped rules are a valid set");
        assert_eq!(report.loaded(), shipped.files.len());

        let mut files = shipped.files.clone();
        files.push(RuleFile {
            name: "zz/broken.yml".into(),
            text: "id: x\ntitle: [unclosed\n".into(),
        });
        let err = validate_set(&RuleSet::new(files)).unwrap_err();
        assert!(
            err.problems.len() == 1 && err.problems[0].contains("zz/broken.yml"),
            "{err}"
        );

        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("pushed").join("rules");
        install_set(&shipped, &dir).expect("install");
        assert_eq!(installed_version(&dir), Some(shipped.version.clone()));
        let one = RuleSet::new(vec![shipped.files[0].clone()]);
        install_set(&one, &dir).expect("replace");
        assert_eq!(installed_version(&dir), Some(one.version.clone()));
        let again = load_dir(&dir).expect("load");
        assert_eq!(
            (again.loaded(), again.total),
            (1, 1),
            "nothing of the old set is left"
        );
    }

    #[test]
    fn one_bad_file_does_not_stop_the_others() {
        let d = tempfile::tempdir().expect("tempdir");
        let (_, good) = SHIPPED[0];
        std::fs::write(d.path().join("a.yml"), good).expect("write");
        std::fs::write(d.path().join("b.yml"), "id: x\ntitle: [unclosed\n").expect("write");
        std::fs::write(d.path().join("c.yml"), good).expect("write");
        let r = load_dir(d.path()).expect("load");
        assert_eq!((r.loaded(), r.total), (1, 3));
        let why: Vec<String> = r.skipped.iter().map(ToString::to_string).collect();
        assert!(
            why.iter().any(|w| w.contains("b.yml:")
                && w.contains("invalid YAML")
                && w.contains("line 2")),
            "{why:?}"
        );
        assert!(
            why.iter()
                .any(|w| w.contains("c.yml") && w.contains("duplicate rule id")),
            "{why:?}"
        );
    }
}
