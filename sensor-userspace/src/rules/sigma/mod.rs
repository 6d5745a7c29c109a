//! A Sigma engine for product `linux`, categories `process_creation`, `file_event` and
//! `network_connection`.
//!
//! A rule file is parsed ([`rule`]), its selections compiled into field matchers
//! ([`pattern`]) and its condition into an expression ([`condition`]); [`fields`] names the
//! Sigma fields the sensor can fill. A rule that uses anything this engine cannot evaluate is
//! refused with the reason, never half-loaded.

pub mod condition;
pub mod fields;
pub mod pattern;
pub mod rule;

use std::path::{Path, PathBuf};

pub use rule::{RuleError, SigmaRule};

/// What loading a directory gave.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub rules: Vec<SigmaRule>,
    /// Files not loaded, each with why.
    pub skipped: Vec<RuleError>,
    /// Files considered (`*.yml`, `*.yaml`).
    pub total: usize,
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

/// Loads every rule under `dir` (recursively). One bad file never stops the others.
pub fn load_dir(dir: &Path) -> std::io::Result<LoadReport> {
    let mut files = Vec::new();
    yaml_files(dir, &mut files)?;
    let mut report = LoadReport {
        total: files.len(),
        ..LoadReport::default()
    };
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => match SigmaRule::parse(&text, &file) {
                Ok(rule) => report.rules.push(rule),
                Err(e) => report.skipped.push(e),
            },
            Err(e) => report.skipped.push(RuleError::Read {
                file: file.clone(),
                reason: e.to_string(),
            }),
        }
    }
    Ok(report)
}
