//! `--alerts-out FILE|-`: alerts (and, in OCSF, incidents as they open and change) as JSON
//! lines for a SIEM, beside `STATE/alerts.jsonl`, in Vigil's own schema or in OCSF.

use std::{collections::HashMap, path::Path};

use crate::{
    ingest::output::{JsonLines, OutputError},
    triage::{
        alerts::Alert,
        incidents::Incident,
        ocsf::{self, Activity},
    },
};

/// The schema of an output (`--alerts-format`, `--events-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Vigil's own: alerts as `STATE/alerts.jsonl` holds them, events as documented.
    #[default]
    Vigil,
    /// OCSF: alerts as Detection Findings (and incidents as Incident Findings as they open
    /// and change); events as Process, File System and Network Activity.
    Ocsf,
}

pub struct AlertExport {
    out: JsonLines,
    format: Format,
    /// The last change of each incident written (OCSF), to tell a new one from an update.
    written: HashMap<String, u64>,
}

impl AlertExport {
    pub fn open(target: &Path, format: Format) -> Result<Self, OutputError> {
        Ok(Self {
            out: JsonLines::open(target)?,
            format,
            written: HashMap::new(),
        })
    }

    /// Writes `alerts`, then (in OCSF) each of `incidents` that is new or changed since it
    /// was last written, and flushes.
    pub fn write(&mut self, alerts: &[Alert], incidents: &[Incident]) {
        for a in alerts {
            match self.format {
                Format::Vigil => self.out.write(a),
                Format::Ocsf => self.out.write(&ocsf::detection_finding(a)),
            }
        }
        if self.format == Format::Ocsf {
            for i in incidents {
                let activity = match self.written.insert(i.id.clone(), i.updated_ns) {
                    None => Activity::Create,
                    Some(last) if last != i.updated_ns => Activity::Update,
                    Some(_) => continue,
                };
                self.out.write(&ocsf::incident_finding(i, activity));
            }
        }
        crate::ingest::pipeline::Sink::flush(&mut self.out);
    }
}
