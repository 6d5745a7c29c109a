//! Detection and triage as one stage the pipeline hands every event to: the detector's
//! findings are screened (an exception suppresses, a low rule is a signal) and the rest are
//! triaged into alerts, which the daemon takes to record and act on.

use crate::{
    detect::Detector,
    host::clock::BootClock,
    ingest::pipeline::Observer,
    model::{events::Event, graph::Graph, process_table::ProcessTable},
    triage::{
        alerts::Alert,
        incidents::{IncidentBook, Screen},
    },
};

pub struct Detection {
    pub detector: Detector,
    pub incidents: IncidentBook,
    /// Raised since the daemon last took them.
    alerts: Vec<Alert>,
}

impl Detection {
    pub fn new(detector: Detector, incidents: IncidentBook) -> Self {
        Self {
            detector,
            incidents,
            alerts: Vec::new(),
        }
    }

    /// The alerts raised since the last call, for the caller to record and act on.
    pub fn take_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.alerts)
    }

    /// Re-reads every incident's story from the graph.
    pub fn refresh(&mut self, table: &ProcessTable, graph: &Graph, clock: &BootClock) {
        self.incidents.refresh(table, graph, clock);
    }
}

impl Observer for Detection {
    fn wants_events(&self) -> bool {
        !self.detector.is_empty()
    }

    fn observe(
        &mut self,
        event: &Event,
        table: &mut ProcessTable,
        graph: &Graph,
        clock: &BootClock,
    ) {
        for finding in self.detector.check(event, table, graph) {
            match self.incidents.screen(&finding) {
                Screen::Suppressed(_) => {}
                Screen::Signal => self.incidents.signal(&finding),
                Screen::Alert => {
                    let alert = self.incidents.triage(finding, table, graph, clock);
                    self.alerts.push(alert);
                }
            }
        }
    }

    fn upkeep(&mut self, now_boot_ns: u64, table: &ProcessTable, graph: &Graph, clock: &BootClock) {
        self.detector.expire(now_boot_ns);
        self.incidents.save_if_changed(table, graph, clock);
    }

    fn flush(&mut self, table: &ProcessTable, graph: &Graph, clock: &BootClock) {
        self.incidents.save_if_changed(table, graph, clock);
    }
}
