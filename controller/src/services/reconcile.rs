//! What a host's connection sets going. The server publishes [`HostEvent`]s; [`run`] turns a
//! host's first report on a connection into convergence on the desired state, the responses
//! of standing hunts that found it while it was away, the sweeps and fleet blocks it missed;
//! and each new alert into the fleet's own steps ([`autonomy`]).

use sensor_common::protocol::HostReport;
use tokio::sync::mpsc;

use crate::services::{Fleet, autonomy, push, schedule, sweep};

/// What the server tells the services about a host.
#[derive(Debug)]
pub enum HostEvent {
    /// The first report of a new connection: what the host runs now.
    Connected { host: String, report: HostReport },
    /// Its connection ended.
    Disconnected { host: String },
    /// A new alert from the host, stored.
    Alert {
        host: String,
        alert: Box<sensor_userspace::triage::alerts::Alert>,
    },
}

/// The sending half, kept by the server.
pub type Events = mpsc::UnboundedSender<HostEvent>;

pub fn channel() -> (Events, mpsc::UnboundedReceiver<HostEvent>) {
    mpsc::unbounded_channel()
}

/// Reconciles each host that connects, each on a task of its own, until the server is gone.
/// A host that refuses a push is not asked again until it reconnects.
pub async fn run(fleet: Fleet, mut events: mpsc::UnboundedReceiver<HostEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            HostEvent::Connected { host, report } => {
                let fleet = fleet.clone();
                tokio::spawn(async move {
                    push::converge(&fleet, &host, report).await;
                    autonomy::catch_up(&fleet, &host).await;
                    schedule::catch_up(&fleet, &host).await;
                    sweep::catch_up(&fleet, &host).await;
                });
            }
            HostEvent::Alert { host, alert } => {
                let fleet = fleet.clone();
                tokio::spawn(async move { autonomy::on_alert(&fleet, &host, *alert).await });
            }
            HostEvent::Disconnected { host } => {
                tracing::debug!(%host, "nothing to reconcile until it reconnects");
            }
        }
    }
}
