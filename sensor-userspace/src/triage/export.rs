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

/// The schema of the alert export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AlertsFormat {
    /// Vigil's alerts, as `STATE/alerts.jsonl` holds them.
    #[default]
    Vigil,
    /// OCSF Detection Findings, and Incident Findings as incidents open and change.
    Ocsf,
}

pub struct AlertExport {
    out: JsonLines,
    format: AlertsFormat,
    /// The last change of each incident written (OCSF), to tell a new one from an update.
    written: HashMap<String, u64>,
}

impl AlertExport {
    pub fn open(target: &Path, format: AlertsFormat) -> Result<Self, OutputError> {
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
                AlertsFormat::Vigil => self.out.write(a),
                AlertsFormat::Ocsf => self.out.write(&ocsf::detection_finding(a)),
            }
        }
        if self.format == AlertsFormat::Ocsf {
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
