//! The Vigil controller: one server for the whole fleet, reached over QUIC with mutual TLS.
//!
//! - [`ca`]: the controller's own certificate authority (server and host certificates);
//! - [`token`]: one-time enrollment tokens that pin the CA;
//! - [`hunt`]: the query language over the fleet's graphs and their history;
//! - [`incidents`]: the fleet's incidents, read from the hosts' alerts, with their indicators;
//! - [`push`]: rules and policy, validated, kept as the fleet's desired state, pushed;
//! - [`recovery`]: release after verifying the host is clean of its incidents' indicators;
//! - [`schedule`]: standing hunts, whose new hits open incidents and may isolate hosts;
//! - [`sweep`]: hash sweeps, answered by each host's sensor, offline ones on reconnect;
//! - [`store`]: what the controller keeps, behind one narrow interface (SQLite embedded);
//! - [`server`]: the QUIC layer over the sans-IO protocol of `sensor_common::protocol`;
//! - [`ops`]: the operator socket the other commands use, with its audit log.
//!
//! Builds without aya or a Linux kernel: it imports the wire side of `sensor-common` and the
//! sensor's rule and policy parsers (`sensor-userspace` without its `kernel` feature).

/// Wall-clock time now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Locks a mutex shared by the server's tasks; a task that panicked holding it left nothing
/// half-written that the store's transactions did not roll back.
pub(crate) fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How the sensors' journals name an operator of the controller (`who` is the socket peer).
pub(crate) fn operator(who: &str) -> String {
    format!("controller operator ({who})")
}

pub mod ca;
pub mod hunt;
pub mod incidents;
pub mod ops;
pub mod push;
pub mod recovery;
pub mod schedule;
pub mod server;
pub mod store;
pub mod sweep;
pub mod token;
